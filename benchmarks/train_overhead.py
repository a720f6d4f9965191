"""hvdlm's single-rank training throughput against a minimal plain-PyTorch loop, in one run.

    python -m benchmarks.train_overhead [--data DIR] [--steps 40] [--repeats 3] [--cores 1]

Same GPT (benchmarks/workload.py's MODEL), same micro-batch, same samples, same init. `hvdlm` is
hvdlm's trainer (`hvdlm.training.trainer.train`) as one rank (its loader, clipping, schedule,
metrics allreduce, progress bar); `plain` is benchmarks/ddp_loop.py without DDP: forward, loss,
backward, AdamW step on batches already in memory. Both are timed per step after a warm-up
block (benchmarks.workload.one_run), each process pinned to the same `--cores` cores; the runs
alternate and the figures are medians over repeats. Goal: hvdlm >= 0.97x the plain loop's
tokens/s. Writes OUT/report.json.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from benchmarks import report
from benchmarks.workload import make_dataset, one_run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.train_overhead",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data", help="dataset folder (default: a byte dataset made in OUT/data)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per run, after warm-up")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=12)
    p.add_argument("--cores", type=int, default=1, help="cores for each process")
    p.add_argument("--out", default="runs/train_overhead")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else make_dataset(out)
    tps: dict[str, list[float]] = {"hvdlm": [], "plain": []}
    cpu: dict[str, list[float]] = {"hvdlm": [], "plain": []}
    with tempfile.TemporaryDirectory(prefix="hvdlm-overhead-") as tmp:
        for rnd in range(args.repeats):
            for name in (["hvdlm", "plain"] if rnd % 2 == 0 else ["plain", "hvdlm"]):
                config = "ddp" if name == "plain" else "hvdlm"  # ddp at 1 rank = no DDP wrapper
                got = one_run(config, 1, args.micro_batch, data, args.steps, Path(tmp),
                              args.cores)
                tps[name].append(got["tokens_per_s"])
                cpu[name].append(got["cpu_s_per_step"])
    result = {name: report.median(v) for name, v in tps.items()}
    payload = {"hvdlm_tokens_per_s": result["hvdlm"], "plain_tokens_per_s": result["plain"],
               "ratio": result["hvdlm"] / result["plain"], "samples": tps,
               "cpu_s_per_step": {k: report.median(v) for k, v in cpu.items()},
               "micro_batch": args.micro_batch, "steps": args.steps, "cores": args.cores,
               "machine": report.machine_info()}
    report.write(out, payload)
    print(f"hvdlm {result['hvdlm']:,.0f} tokens/s, plain PyTorch loop {result['plain']:,.0f} "
          f"tokens/s: {payload['ratio']:.3f}x (goal >= 0.97x; medians of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
