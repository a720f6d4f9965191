"""Weak/strong scaling of the same GPT on the same data: hvdlm's trainer (Horovod) vs DDP.

    python -m benchmarks.scaling --np 1,2 --mode weak --out runs/scaling
    python -m benchmarks.scaling --np 1,2 --mode both --backends horovod,ddp --steps 30 --repeats 3
    python -m benchmarks.scaling --np 2 --backends horovod --timeline --out runs/timeline
    python -m benchmarks.scaling --hosts 2 --rate 1gbit --delay 0.2ms --np 1,2  (root)

Backends: `horovod` = hvdlm's trainer itself (`hvdlm.training.trainer.train`: its settings,
its metrics allreduce, clipping), timed per step by a callback; `ddp` = benchmarks/ddp_loop.py
(torch.distributed Gloo + DistributedDataParallel); every configuration is described at
benchmarks.workload's TRAIN_CONFIGS. Each rank is pinned to an equal share of the cores (1 core
per rank with 2 ranks on 2 cores; the 1-rank runs also get 1 core). Weak scaling fixes the per-rank
micro-batch, strong scaling the global batch. E(N) = tokens/s(N) / (N · tokens/s(1)) for weak,
speed-up / N for strong. Repeats interleave backends and N; figures are medians. With
`--allreduce DIR` (a benchmarks.allreduce report) the cost model of benchmarks/costmodel.py is
fitted and compared with the measurements (benchmarks/scaling_model.py). Writes
DIR/report.json, DIR/report.md and, with matplotlib, DIR/*.png (benchmarks/scaling_report.py).
The committed report of this machine is docs/scaling/report.md (with docs/scaling/NOTES.md).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

from benchmarks import report
from benchmarks.costmodel import summarise_timeline
from benchmarks.harness import (add_common, apply_common, cores_per_rank, emulated_hosts,
                                shared_tmp, split_config)
from benchmarks.scaling_model import Run, cost_model
from benchmarks.scaling_report import write_report
from benchmarks.workload import BLOCK, MODEL, TRAIN_CONFIGS, make_dataset, one_run

BACKEND_CONFIG = {"horovod": "hvdlm", "ddp": "ddp"}  # the config each backend name means


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, int]]:
    """(config, mode, np, per-rank micro-batch) for every measurement."""
    nps = sorted({int(n) for n in args.np.split(",")} | {1})
    modes = ["weak", "strong"] if args.mode == "both" else [args.mode]
    configs = args.configs.split(",") if args.configs else [BACKEND_CONFIG[b]
                                                           for b in args.backends.split(",")]
    out = []
    for mode in modes:
        for config in configs:
            for n in nps:
                mb = args.micro_batch if mode == "weak" else max(1, args.global_batch // n)
                out.append((config, mode, n, mb))
    return out


def measure(args: argparse.Namespace, data: Path) -> list[Run]:
    items = plan(args)
    share = cores_per_rank(max(n for _, _, n, _ in items))  # the 1-rank runs get one share too
    got: dict[tuple, list[dict[str, float]]] = {item: [] for item in items}
    with tempfile.TemporaryDirectory(prefix="hvdlm-scaling-", dir=shared_tmp()) as tmp:
        for rnd in range(args.repeats):
            for item in items if rnd % 2 == 0 else items[::-1]:
                config, _, n, mb = item
                got[item].append(one_run(config, n, mb, data, args.steps, args.hosts, Path(tmp),
                                         share))
                last = got[item][-1]
                print(f"  round {rnd + 1}: {item} {last['tokens_per_s']:,.0f} tokens/s, CPU "
                      f"{last['cpu_s_per_step'] * 1e3:.1f} ms/step", flush=True)
    runs = []
    for (config, mode, n, mb), values in got.items():
        tps = report.median(v["tokens_per_s"] for v in values)
        base = got[(config, mode, 1, args.micro_batch if mode == "weak" else args.global_batch)]
        # This machine's speed drifts from minute to minute: each round's N-rank run is divided
        # by the 1-rank run measured next to it, and the efficiency is the median of those
        # ratios. E = tokens/s(N) / (N · tokens/s(1)) in both modes (for strong scaling, with
        # the global batch fixed, that is the speed-up over N).
        ratios = [v["tokens_per_s"] / (n * b["tokens_per_s"]) for v, b in zip(values, base)]
        backend = {"ddp": "ddp", "nocomm": "none"}.get(split_config(config, TRAIN_CONFIGS)[0],
                                                      "horovod")
        cpu = report.median(v["cpu_s_per_step"] for v in values)
        rel = relative_step_times(v["step_times"] for v in values)
        runs.append(Run(backend, n, mode, tps, n * mb * MODEL["seq_len"] / tps,
                        report.median(ratios), config, mb, cpu, ratios,
                        report.variation(rel), rel))
    return runs


def relative_step_times(rounds: Iterable[list[list[float]]]) -> list[float]:
    """Each round's per-rank step times over that round's mean (drift between rounds is not
    step-to-step variation), pooled."""
    out = []
    for per_rank in rounds:
        times = [t for steps in per_rank for t in steps]
        mean = statistics.fmean(times)
        out += [round(t / mean, 4) for t in times]
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks.scaling", description=__doc__.split("\n")[0])
    p.add_argument("--np", default="1,2", help="rank counts, e.g. 1,2 (1 is always added)")
    p.add_argument("--mode", default="weak", choices=["weak", "strong", "both"])
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--backends", default="horovod,ddp")
    p.add_argument("--configs", help="explicit list: hvdlm, hvdlm-nostats, hvdlm-nograds, ddp, "
                   "nocomm, hvdlm+ENV=V...")
    p.add_argument("--steps", type=int, default=30, help="timed steps per run (after warm-up)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=12, help="weak: per-rank micro-batch")
    p.add_argument("--global-batch", type=int, default=24, help="strong: global batch")
    p.add_argument("--data", help="dataset folder (default: make a byte dataset in OUT/data)")
    p.add_argument("--allreduce", help="a benchmarks.allreduce report folder: fit the cost model")
    p.add_argument("--timeline", action="store_true",
                   help="record and summarise a Horovod timeline")
    p.add_argument("--predict-params", type=float, help="cost model: parameters of the model to "
                   "predict for on the named networks (default: the benchmark's GPT)")
    p.add_argument("--predict-compute-s", type=float, help="cost model: its 1-rank step time "
                   "(default: this machine's, scaled by parameters)")
    p.add_argument("--overlap", type=float, default=0.0, help="cost model: hidden fraction h")
    add_common(p)
    p.add_argument("--hosts", type=int, default=0, help="emulated hosts (root; see scripts/)")
    p.add_argument("--rate", default="1gbit")
    p.add_argument("--delay", default="0ms")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    apply_common(args)
    for config, _, _, _ in plan(args):
        split_config(config, TRAIN_CONFIGS)  # unknown names fail before any rank starts
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else make_dataset(out)
    with emulated_hosts("benchmarks.scaling", args.hosts, args.rate, args.delay):
        runs = measure(args, data)
        timeline = record_timeline(data, args) if args.timeline else None
        # Without --allreduce the model measures the allreduce now: on the same hosts.
        model = cost_model(runs, args, data, timeline)
    write_report(out, runs, model, args, timeline)
    for r in runs:
        print(f"{r.backend:8s} {r.config:14s} {r.mode:6s} np={r.np} {r.tokens_per_s:10,.0f} "
              f"tokens/s  step {r.step_time_s * 1e3:7.1f} ms  efficiency {r.efficiency:.3f}")
    print(f"report: {out / 'report.md'}")
    return 0


def record_timeline(data: Path, args: argparse.Namespace) -> dict:
    """hvdlm at the largest N with HOROVOD_TIMELINE; time per activity, summed over tensors."""
    n = max(int(x) for x in args.np.split(","))
    with tempfile.TemporaryDirectory(prefix="hvdlm-tl-", dir=shared_tmp()) as tmp:
        path = Path(tmp, "timeline.json")
        one_run(f"hvdlm+HOROVOD_TIMELINE={path}", n, args.micro_batch, data, 10, args.hosts,
                Path(tmp), cores_per_rank(n))
        return summarise_timeline(path, steps=BLOCK + 10)


if __name__ == "__main__":
    sys.exit(main())
