"""Peak memory per rank against --print-config's plan, and the step time, for each
train.shard_optimizer stage, in one run.

    python -m benchmarks.memory [--ranks 1,2,4] [--stages 0,1,2] [--steps 12] [--out DIR]
        [--set train.activation_checkpointing=true]

A GPT of a few million parameters (MODEL) trains with hvdlm's Trainer on a byte dataset, as
N ranks started by benchmarks/harness.py. Each rank measures its own peak above what it held
just before the model was built: on CPU the bytes glibc's malloc had handed out (`HeapPeak`,
sampled every 0.5 ms: allocator statistics), and beside it the growth of the resident set's
high-water mark (VmHWM, reset through /proc/self/clear_refs), which also holds what
fragmentation and Horovod's thread arena keep; on CUDA torch.cuda.max_memory_allocated. The plan is
hvdlm/training/estimate.py's (weights + gradients + AdamW + activations). The step time is the
median over the steps after the first three. On one rank every stage is stage 0 (nothing to
shard), so stage 0 alone runs there. Before the baseline each rank
takes one step of a one-layer model (`warm_up`): torch's first-use memory is no model's. Writes OUT/report.json and OUT/report.md.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import sys
import threading
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from benchmarks import harness, report
from benchmarks.workload import make_dataset
from hvdlm.cluster import distributed
from hvdlm.config import load_config
from hvdlm.models import build_model
from hvdlm.training import malloc
from hvdlm.training.data import open_dataset
from hvdlm.training.estimate import estimate
from hvdlm.training.optim import make_optimizer
from hvdlm.training.trainer import Callback, Trainer

try:  # the metrics writer's import, done here: before any rank's memory baseline
    import torch.utils.tensorboard  # noqa: F401
except ImportError:
    pass

MODEL = {"arch": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 256, "seq_len": 128}
WARM_STEPS = 3


def overrides(stage: int, steps: int, micro_batch: int, device: str,
              extra: Sequence[str] = ()) -> list[str]:
    return [f"model.{k}={v}" for k, v in MODEL.items()] + [
        f"train.shard_optimizer={stage}", f"train.max_steps={steps}",
        f"train.micro_batch={micro_batch}", "train.eval_interval=1000000",
        "train.ckpt_interval=1000000", "train.log_interval=1000000", "train.precision=fp32",
        "train.compile=false", f"train.device={device}", "model.dropout=0.0", *extra]


class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


class HeapPeak:
    """The most bytes glibc's malloc had handed out and not taken back (mallinfo2: uordblks +
    hblkhd, over all arenas), sampled by a thread every `interval` seconds: the live bytes,
    without the free space that fragmentation and per-thread arenas keep resident."""

    def __init__(self, interval: float = 0.0005):
        self._info = ctypes.CDLL(None).mallinfo2
        self._info.restype = Mallinfo2
        self.interval, self.peak, self._done = interval, 0, threading.Event()
        self.base = self.now()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def now(self) -> int:
        info = self._info()
        return info.uordblks + info.hblkhd

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, self.now())

    def stop(self) -> int:
        """The peak above the bytes in use when sampling started."""
        self._done.set()
        self._thread.join()
        return max(self.peak, self.now()) - self.base


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def warm_up(cfg) -> None:
    """One step of a one-layer model of the same kind, thrown away: the kernels', thread
    pools' and imports' first-use memory then lies below the baseline, not in the peak."""
    tiny = build_model(dataclasses.replace(cfg.model, n_layer=1, n_embd=32, n_head=2))
    optimizer = make_optimizer(tiny, cfg.train)
    x = torch.randint(0, cfg.model.vocab_size, (2, cfg.model.seq_len + 1))
    logits = tiny(x[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    optimizer.step()


def rank_main(args: argparse.Namespace) -> None:
    """One rank: train, then write {peak bytes above the baseline, step times}."""
    rank, _ = harness.start_rank(args.result, args.cores_per_rank)
    cfg = load_config(None, overrides(args.stage, args.steps, args.micro_batch, args.device,
                                      args.set))
    world = distributed.init(args.device, None, pin_cores=False)
    cuda = world.device.type == "cuda"
    if not cuda:
        malloc.keep_freed_memory()
    distributed.sum_(torch.zeros(1), name="warm_up")  # Horovod's own first allocations
    warm_up(dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, vocab_size=open_dataset(args.data).vocab_size)))
    Path(args.run_dir).mkdir(parents=True, exist_ok=True)
    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        base = status_kib("VmRSS") * 1024
        heap = HeapPeak()
    clock, found = harness.StepClock(), {}

    class Probe(Callback):
        def on_step_start(self, trainer: Trainer) -> None:
            clock.tick()

        def on_step_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
            if trainer.step == trainer.t.max_steps:  # before the final save and evaluation
                clock.tick()
                if cuda:
                    found["peak"] = torch.cuda.max_memory_allocated() - base
                else:
                    found["peak"] = heap.stop()
                    found["rss_peak"] = status_kib("VmHWM") * 1024 - base

    Trainer(cfg, args.data, args.run_dir, world, resume="never", callbacks=[Probe()]).run()
    walls, _ = clock.deltas(WARM_STEPS)
    harness.write_result(harness.rank_path(args.result, rank),
                         {**found, "step_s": report.median(walls)})


def plan(data: Path, np_: int, stage: int, micro_batch: int, extra: Sequence[str] = ()
         ) -> dict[str, int]:
    cfg = load_config(None, overrides(stage, 1, micro_batch, "cpu", extra)
                      + [f"model.vocab_size={open_dataset(data).vocab_size}"])
    e = estimate(cfg, np_, stage)
    return {"weights": e.weights, "gradients": e.gradients, "optimizer": e.optimizer,
            "activations": e.activations, "buffers": e.buffers, "total": e.total,
            "parameters": e.parameters}


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.memory", description=__doc__.split("\n")[0])
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--stages", default="0,1,2")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="another config override, e.g. train.activation_checkpointing=true")
    p.add_argument("--out", default="runs/memory")
    harness.add_common(p, device=True)
    sub = p.add_subparsers(dest="role")
    r = sub.add_parser("rank", help="(internal) one rank, started by the driver")
    for flag in ("--data", "--result", "--run-dir"):
        r.add_argument(flag, required=True)
    r.add_argument("--stage", type=int, required=True)
    r.add_argument("--torch-port", type=int, default=0)
    r.add_argument("--cores-per-rank", type=int, default=0)
    r.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.role == "rank":
        rank_main(args)
        return 0
    out = Path(args.out)
    data = make_dataset(out)
    launch = harness.Launch.from_args(args)
    rows = []
    for np_ in map(int, args.ranks.split(",")):
        for stage in map(int, args.stages.split(",")):
            if np_ == 1 and stage:
                continue  # one rank has nothing to shard: stage 0 is what runs
            with tempfile.TemporaryDirectory(prefix="hvdlm-memory-") as tmp:
                result = Path(tmp) / "result.json"
                cmd = harness.module_cmd(
                    "benchmarks.memory", "--steps", args.steps, "--micro-batch",
                    args.micro_batch, *(a for v in args.set for a in ("--set", v)), "rank", "--data", data, "--result", result,
                    "--run-dir", Path(tmp) / "run", "--stage", stage)
                launch.run(np_, cmd, {})
                ranks = [harness.read_result(harness.rank_path(result, i)) for i in range(np_)]
            planned = plan(data, np_, stage, args.micro_batch, args.set)
            peak = max(r["peak"] for r in ranks)
            rows.append({"ranks": np_, "stage": stage, "plan": planned, "peak": peak,
                         "peaks": [r["peak"] for r in ranks],
                         "rss_peak": max(r.get("rss_peak", 0) for r in ranks),
                         "step_s": max(r["step_s"] for r in ranks),
                         "off": peak / planned["total"] - 1})
            print(f"{np_} ranks, stage {stage}: peak {mib(peak)} MiB (RSS growth "
                  f"{mib(rows[-1]['rss_peak'])}), plan "
                  f"{mib(planned['total'])} MiB ({rows[-1]['off']:+.1%}), step "
                  f"{rows[-1]['step_s'] * 1e3:.0f} ms", flush=True)
    table = report.md_table(
        ["ranks", "stage", "weights", "gradients", "AdamW", "activations", "fusion buffer",
         "plan (MiB)",
         "measured peak (MiB)", "off", "peak RSS growth (MiB)", "step (ms)"],
        [[r["ranks"], r["stage"], mib(r["plan"]["weights"]), mib(r["plan"]["gradients"]),
          mib(r["plan"]["optimizer"]), mib(r["plan"]["activations"]),
          mib(r["plan"]["buffers"]), mib(r["plan"]["total"]),
          mib(r["peak"]), f"{r['off']:+.1%}", mib(r["rss_peak"]), f"{r['step_s'] * 1e3:.0f}"]
         for r in rows])
    cmd = "python -m benchmarks.memory " + " ".join(sys.argv[1:] if argv is None else argv)
    report.write(out, {"machine": report.machine_info(), "model": MODEL, "rows": rows},
                 "Peak memory per rank against the plan, by train.shard_optimizer stage",
                 [("Command", f"`{cmd.strip()}`"), ("Per rank (MiB)", table)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
