"""The GPU check's measurements, stage by stage; benchmarks/gpu_check.sh builds Horovod, then runs

    python -m benchmarks.gpu_check --out OUT [--peak-flops F] [--budget-s S] [--cpu-smoke]
    python -m benchmarks.gpu_check compile [--device cpu|cuda]   (eager against compiled)

On one GPU, for the GPT-124M shape (12 layers x 768, 12 heads, 1,024 tokens, a BPE vocabulary
of about 50k trained on the Python standard library, padded inside the model to a multiple of
64), bf16: tokens/s and MFU eager and compiled (train.compile) and each run's peak GPU memory;
fp16 with dynamic loss scaling for 50 steps (the loss must stay finite); a Horovod world on
the GPU (built with NCCL? an allreduce of CUDA tensors); hvdlm.evaluate and hvdlm.generate
with --device cuda --checkpoint; benchmarks.allreduce --device cuda (Horovod NCCL against
torch.distributed NCCL, one rank per GPU). Writes OUT/summary.json and OUT/summary.txt.

--cpu-smoke runs every stage the same way on the CPU at a tiny shape (2 layers x 32, 64
tokens, the byte tokenizer) with the Horovod already installed, in well under a minute:
tests/test_gpu_check.py runs it in CI so that the script cannot rot.

Each stage runs as its own process (`python -m benchmarks.gpu_check train ...`, or hvdlm's
commands), within what is left of --budget-s; a stage that fails or runs out of time is
recorded as failed with the end of its output, and the others still run. tokens/s and MFU
are the medians of the trainer's log intervals after the first (which holds the compile and
the warm-up); MFU = the model's FLOPs per token x tokens/s / --peak-flops (GPU only).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import horovod.torch as hvd
import torch
import torch.nn.functional as F

from benchmarks import ROOT
from benchmarks.harness import rank_device, write_result
from benchmarks.workload import MODEL
from hvdlm.config import ModelConfig, load_config
from hvdlm.models import build_model
from hvdlm.training.trainer import train

GOAL_MFU = 0.45  # issue 28: the 124M shape on one H100 or H200, compiled


@dataclass(frozen=True)
class Shape:
    """What one check trains: the model, the batch, the steps, the data it makes."""
    n_layer: int
    n_head: int
    n_embd: int
    seq_len: int
    micro_batch: int
    steps: int  # eager and compiled runs (log every steps // 4)
    fp16_steps: int
    vocab_size: int  # BPE vocabulary; 0: the byte tokenizer
    corpus: tuple[str, ...]  # standard-library packages the data is made from
    sizes: str  # allreduce message sizes

    def overrides(self, device: str) -> list[str]:
        return [f"model.n_layer={self.n_layer}", f"model.n_head={self.n_head}",
                f"model.n_embd={self.n_embd}", f"model.seq_len={self.seq_len}",
                f"train.micro_batch={self.micro_batch}", f"train.device={device}",
                "train.warmup_steps=5", "train.eval_batches=1", "train.eval_interval=1000000",
                "train.ckpt_interval=1000000", "train.log_format=lines"]


GPT_124M = Shape(12, 12, 768, 1024, 16, 40, 50, 50257,
                 ("json", "email", "asyncio", "unittest", "logging", "importlib", "http",
                  "xml", "multiprocessing", "concurrent", "urllib", "tomllib", "sqlite3",
                  "collections", "pathlib", "idlelib", "lib2to3", "tkinter", "pydoc_data"),
                 "4M,64M,256M")
SMOKE = Shape(1, 2, 32, 32, 2, 8, 20, 0, ("json",), "64K")


# ---------------------------------------------------------------- stages (own processes)

def train_stage(argv: Sequence[str]) -> int:
    """`train --data D --run-dir R --result F [OVERRIDES...]`: hvdlm's trainer in this
    process; F gets its metric records and the peak memory (GPU: allocated by torch; CPU:
    the process's peak resident set)."""
    p = argparse.ArgumentParser(prog="benchmarks.gpu_check train")
    p.add_argument("--data", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--result", required=True)
    args, overrides = p.parse_known_args(argv)
    cfg = load_config(None, overrides)
    code = train(cfg, args.data, args.run_dir, resume="never")
    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    records = [json.loads(line) for line in Path(args.run_dir, "metrics.jsonl").open()]
    write_result(args.result, {"code": code, "peak_memory_bytes": peak, "records": records})
    return code


def horovod_stage(argv: Sequence[str]) -> int:
    """`horovod --device D --result F`: start a Horovod world on D (NCCL on a GPU, when
    Horovod was built with it), allreduce a tensor there and check the sum."""
    p = argparse.ArgumentParser(prog="benchmarks.gpu_check horovod")
    p.add_argument("--device", choices=["cpu", "cuda"], required=True)
    p.add_argument("--result", required=True)
    args = p.parse_args(argv)
    dev = rank_device(args.device)
    hvd.init()
    x = torch.arange(1 << 20, dtype=torch.float32, device=dev)
    total = hvd.allreduce(x, op=hvd.Sum, name="gpu_check")
    ok = bool(torch.equal(total, x * hvd.size()))
    write_result(args.result, {"size": hvd.size(), "nccl_built": bool(hvd.nccl_built()),
                               "gloo_built": bool(hvd.gloo_built()), "device": str(dev),
                               "allreduce_ok": ok})
    hvd.shutdown()
    return 0 if ok else 1


# ---------------------------------------------------------------- the driver

class Stages:
    """Runs each stage as a process within the budget; keeps what each gave."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.deadline = out, time.monotonic() + budget_s
        self.results: dict[str, dict] = {}

    def run(self, name: str, cmd: list[str], result: Path | None = None) -> dict | None:
        left = self.deadline - time.monotonic()
        entry: dict = {"ok": False}
        self.results[name] = entry
        if left < 5:
            entry["error"] = "skipped: no time left in the budget"
            return None
        start = time.monotonic()
        out, log = self.out / f"{name}.out", self.out / f"{name}.log"  # stdout, stderr
        try:
            with out.open("w") as o, log.open("w") as e:
                code = subprocess.run(cmd, stdout=o, stderr=e, cwd=ROOT,
                                      timeout=left).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        entry["seconds"] = round(time.monotonic() - start, 1)
        text = out.read_text(errors="replace")
        if code != 0:
            tail = (log.read_text(errors="replace") or text).strip().splitlines()[-3:]
            entry["error"] = f"exit {code}: " + " | ".join(tail)
            return None
        entry["ok"] = True
        if result is None:
            return {"stdout": text}
        return json.loads(result.read_text())


def module(name: str, *args: object) -> list[str]:
    return [sys.executable, "-m", name, *map(str, args)]


def interval_stats(records: list[dict]) -> dict:
    """Median tokens/s and MFU of the second half of the log intervals (the first ones hold
    the compile, and a recompile or two); the last loss."""
    steps = [r for r in records if "tokens_per_s" in r]
    timed = steps[len(steps) // 2:]
    out = {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
           "intervals": len(timed), "final_loss": steps[-1]["loss"] if steps else None}
    if timed and "mfu" in timed[0]:
        out["mfu"] = statistics.median(r["mfu"] for r in timed)
    return out


def newest_checkpoint(run: Path) -> Path | None:
    found = sorted((run / "checkpoints").glob("*.pt"))
    return found[-1] if found else None


def check(out: Path, shape: Shape, device: str, peak_flops: float, budget_s: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, budget_s)
    data = out / "data"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    tokenizer = (["--vocab-size", shape.vocab_size] if shape.vocab_size
                 else ["--tokenizer", "byte"])
    corpus = [stdlib / p for p in shape.corpus if (stdlib / p).exists()]  # some images lack some
    stages.run("data", module("hvdlm.preprocess", *corpus,
                              "--out", data, *tokenizer, "--val-fraction", 0.02, "--seed", 0,
                              "--overwrite"))
    summary: dict = {"device": device, "shape": shape.__dict__, "peak_flops": peak_flops}
    if device == "cuda":
        summary["gpu"] = torch.cuda.get_device_name(0)
    manifest = data / "manifest.json"
    if manifest.exists():
        summary["vocab_size"] = json.loads(manifest.read_text()).get("vocab_size")
    base = [*shape.overrides(device), f"train.peak_flops={peak_flops}"]
    for name, extra in (("eager", ["train.compile=false", "train.precision=bf16"]),
                        ("compiled", ["train.compile=true", "train.precision=bf16"]),
                        ("fp16", ["train.compile=false", "train.precision=fp16",
                                  f"train.max_steps={shape.fp16_steps}",
                                  f"train.log_interval={max(1, shape.fp16_steps // 5)}"])):
        steps = [f"train.max_steps={shape.steps}", f"train.log_interval={shape.steps // 4}"]
        result = out / f"{name}.json"
        got = stages.run(name, module("benchmarks.gpu_check", "train", "--data", data,
                                      "--run-dir", out / name, "--result", result,
                                      *base, *steps, *extra), result)
        if got:
            summary[name] = {**interval_stats(got["records"]),
                             "peak_memory_gib": got["peak_memory_bytes"] / 2**30}
        if got and name == "fp16":
            last = [r for r in got["records"] if "loss_scale" in r][-1:] or [{}]
            loss = summary[name]["final_loss"]
            summary[name].update(finite=loss is not None and math.isfinite(loss),
                                 loss_scale=last[0].get("loss_scale"),
                                 overflows=last[0].get("overflows"), steps=shape.fp16_steps)
    result = out / "horovod.json"
    summary["horovod"] = stages.run("horovod", module("benchmarks.gpu_check", "horovod",
                                                      "--device", device, "--result", result),
                                    result)
    ckpt = newest_checkpoint(out / "eager")
    if ckpt:
        got = stages.run("evaluate", module("hvdlm.evaluate", "--run", out / "eager",
                                            "--checkpoint", ckpt, "--data", data, "--device",
                                            device, "--batch-size", 2, "--json"))
        lines = [x for x in (got or {}).get("stdout", "").splitlines() if x.startswith("{")]
        if lines:
            summary["evaluate"] = json.loads(lines[-1])
        elif got:
            stages.results["evaluate"].update(ok=False, error="no JSON line on its stdout")
        got = stages.run("generate", module("hvdlm.generate", "--run", out / "eager",
                                            "--checkpoint", ckpt, "--prompt", "def ",
                                            "--max-new-tokens", 32, "--device", device))
        if got:
            summary["generate"] = {"text": got["stdout"][-200:]}
    gpus = torch.cuda.device_count() if device == "cuda" else 1
    peer = "nccl" if device == "cuda" else "gloo"
    stages.run("allreduce", module("benchmarks.allreduce", "--device", device, "--np", gpus,
                                   "--configs", f"hvdlm,{peer}",
                                   "--sizes", shape.sizes, "--iters", 20 if gpus > 1 else 5,
                                   "--rounds", 1, "--out", out / "allreduce"))
    ar = out / "allreduce" / "report.json"
    if ar.exists():
        summary["allreduce"] = json.loads(ar.read_text())["results"]
    summary["stages"] = stages.results
    return summary


def compare_compile(device: str, steps: int, rounds: int) -> dict:
    """Eager against compiled tokens/s of the benchmarks' GPT (benchmarks.workload.MODEL,
    fp32, 12 windows a step, AdamW), in one process: after the compile and warm-up, rounds of
    `steps` steps alternate between the two (in turn first), so that other load on the
    machine hits both alike; the medians over rounds, and the median of each round's ratio."""
    dev = torch.device(device)
    cfg = ModelConfig(**MODEL, vocab_size=257)
    batch = torch.randint(0, 257, (12, MODEL["seq_len"] + 1), device=dev)
    runs = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = build_model(cfg).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        runs[name] = (torch.compile(model) if name == "compiled" else model, opt)

    def block(name: str, n: int) -> float:
        forward, opt = runs[name]
        start = time.perf_counter()
        for _ in range(n):
            logits = forward(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        loss.item()  # waits for the device
        return n * batch[:, 1:].numel() / (time.perf_counter() - start)

    for name in runs:
        block(name, 3)  # compile, warm-up
    got: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            got[name].append(block(name, steps))
    ratios = [c / e for c, e in zip(got["compiled"], got["eager"])]
    return {"eager": statistics.median(got["eager"]),
            "compiled": statistics.median(got["compiled"]),
            "ratio": statistics.median(ratios), "steps": steps, "rounds": rounds}


def verdict(summary: dict) -> list[str]:
    """The summary's lines for people; the last says whether every stage passed."""
    lines = [f"gpu_check on {summary.get('gpu', 'the CPU (smoke)')}, vocabulary "
             f"{summary.get('vocab_size')} (padded to a multiple of 64 in the model)"]
    for name in ("eager", "compiled"):
        if name in summary:
            s = summary[name]
            mfu = f", MFU {s['mfu']:.1%}" if "mfu" in s else ""
            lines.append(f"{name:9s} bf16: {s['tokens_per_s']:,.0f} tokens/s{mfu}, peak memory "
                         f"{s['peak_memory_gib']:.2f} GiB")
    if "fp16" in summary:
        s = summary["fp16"]
        lines.append(f"fp16 + loss scaling, {s['steps']} steps: final loss {s['final_loss']:.3f} "
                     f"({'finite' if s['finite'] else 'NOT finite'}), scale {s['loss_scale']}, "
                     f"overflows {s['overflows']}")
    hv = summary.get("horovod")
    if hv:
        lines.append(f"Horovod world of {hv['size']} on {hv['device']}: NCCL built "
                     f"{hv['nccl_built']}, allreduce {'right' if hv['allreduce_ok'] else 'WRONG'}")
    if "evaluate" in summary:
        lines.append(f"evaluate: loss {summary['evaluate'].get('loss', float('nan')):.3f}")
    for row in summary.get("allreduce", []):
        lines.append(f"allreduce {row['config']:8s} np={row['np']} {row['bytes'] / 2**20:g} MiB: "
                     f"{row['time_s'] * 1e3:.2f} ms, algbw {row['algbw_gbps']:.1f} GB/s, "
                     f"busbw {row['busbw_gbps']:.1f} GB/s")
    if "mfu" in summary.get("compiled", {}):
        reached = summary["compiled"]["mfu"] >= GOAL_MFU
        lines.append(f"goal MFU >= {GOAL_MFU:.0%} compiled: {'met' if reached else 'not met'}")
    failed = [f"{k} ({v.get('error')})" for k, v in summary["stages"].items() if not v["ok"]]
    if "fp16" in summary and not summary["fp16"]["finite"]:
        failed.append("fp16 (the loss is not finite)")
    if summary["device"] == "cuda" and hv and not hv["nccl_built"]:
        failed.append("horovod (built without NCCL)")
    lines.append("gpu_check: all stages passed" if not failed
                 else "gpu_check: FAILED: " + "; ".join(failed))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:
        return train_stage(argv[1:])
    if argv[:1] == ["horovod"]:
        return horovod_stage(argv[1:])
    if argv[:1] == ["compile"]:
        c = argparse.ArgumentParser(prog="benchmarks.gpu_check compile")
        c.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
        c.add_argument("--steps", type=int, default=10, help="steps per round")
        c.add_argument("--rounds", type=int, default=7, help="alternating rounds of each")
        args = c.parse_args(argv[1:])
        got = compare_compile(args.device, args.steps, args.rounds)
        print(f"eager {got['eager']:,.0f} tokens/s, compiled {got['compiled']:,.0f} tokens/s, "
              f"compiled/eager {got['ratio']:.2f} (median of {args.rounds} alternating rounds "
              f"of {args.steps} steps; {args.device}, {torch.get_num_threads()} threads)")
        return 0
    p = argparse.ArgumentParser(prog="benchmarks.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu-check-out")
    p.add_argument("--peak-flops", type=float, default=989e12,
                   help="one GPU's peak dense bf16 FLOP/s (989e12: H100/H200 SXM)")
    p.add_argument("--budget-s", type=float, default=540, help="stop starting stages after this")
    p.add_argument("--cpu-smoke", action="store_true", help="every stage on the CPU, tiny")
    p.add_argument("--build", help="a JSON file of the Horovod build step (gpu_check.sh)")
    args = p.parse_args(argv)
    if not args.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu_check: no CUDA device visible to torch "
                         "(--cpu-smoke runs the check on the CPU)")
    out = Path(args.out)
    start = time.monotonic()
    summary = check(out, SMOKE if args.cpu_smoke else GPT_124M,
                    "cpu" if args.cpu_smoke else "cuda", args.peak_flops, args.budget_s)
    if args.build and Path(args.build).exists():
        summary["build"] = json.loads(Path(args.build).read_text())
    summary["seconds"] = round(time.monotonic() - start, 1)
    lines = verdict(summary)
    summary["passed"] = lines[-1].endswith("all stages passed")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
