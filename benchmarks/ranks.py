"""What runs inside a benchmark's ranks, whichever stack they use (no Horovod, no process group).

The rank entry points are two modules, one per stack, so a torch.distributed rank never
loads Horovod and a Horovod rank never starts a torch.distributed process group:

    python -m benchmarks.horovod_ranks allreduce|train ...   (hvdlm, defaults; hvdlm*)
    python -m benchmarks.torch_ranks allreduce|train ...     (gloo; ddp, nocomm)

Both take the arguments of `parse_args` here and write their results with `time_allreduce` +
`write_allreduce_result` or `write_train_result`; the drivers (benchmarks.allreduce,
benchmarks.workload.one_run) start them through benchmarks.harness and read the files back.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from benchmarks.harness import rank_path, write_result
from benchmarks.workload import BLOCK

TUNING_PREFIXES = ("HOROVOD_CYCLE", "HOROVOD_WAKE", "HOROVOD_FUSION", "HOROVOD_CACHE",
                   "HOROVOD_HIERARCHICAL", "OMP_", "NCCL_")


def parse_args(prog: str, allreduce_configs: Sequence[str], train_configs: Sequence[str],
               argv: Sequence[str] | None) -> argparse.Namespace:
    """`allreduce --config C --sizes BYTES,... --iters N --result PATH` or
    `train --config C --data DIR --micro-batch B --steps N --result PATH [--run-dir DIR]`,
    each with what the driver chose for every rank of the job (benchmarks.harness.Launch):
    --cores-per-rank K (0: split the node's cores), --torch-port P (the peers' port) and
    --device cpu|cuda."""
    job = argparse.ArgumentParser(add_help=False)
    job.add_argument("--cores-per-rank", type=int, default=0)
    job.add_argument("--torch-port", type=int, default=0)
    job.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p = argparse.ArgumentParser(prog=prog, description="one rank of a benchmark job")
    sub = p.add_subparsers(dest="task", required=True)
    ar = sub.add_parser("allreduce", parents=[job])
    ar.add_argument("--config", required=True, choices=allreduce_configs)
    ar.add_argument("--sizes", required=True, help="comma list of bytes")
    ar.add_argument("--iters", type=int, required=True)
    ar.add_argument("--result", required=True)
    tr = sub.add_parser("train", parents=[job])
    tr.add_argument("--config", required=True, choices=train_configs)
    tr.add_argument("--data", required=True)
    tr.add_argument("--micro-batch", type=int, required=True)
    tr.add_argument("--steps", type=int, required=True)
    tr.add_argument("--result", required=True)
    tr.add_argument("--run-dir")
    args = p.parse_args(argv)
    if args.task == "allreduce":
        args.sizes = [int(s) for s in args.sizes.split(",") if s]
    return args


def time_allreduce(allreduce: Callable[[torch.Tensor], object], sizes: Sequence[int],
                   iters: int, device: torch.device = torch.device("cpu")) -> dict[int, float]:
    """Median seconds of `iters` in-place calls per size (bytes of float32), after warm-up.
    On a GPU each call is timed until the device has finished it (NCCL runs on a stream)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {}
    for size in sizes:
        t = torch.ones(size // 4, dtype=torch.float32, device=device)
        for _ in range(max(2, iters // 5)):
            allreduce(t)
        sync()
        samples = []
        for _ in range(iters):
            start = time.perf_counter()
            allreduce(t)
            sync()
            samples.append(time.perf_counter() - start)
        times[size] = statistics.median(samples)
    return times


def write_allreduce_result(path: str | Path, times: dict[int, float], **extra: object) -> None:
    """Rank 0's medians, torch threads and the tuning variables it ran with (and `extra`)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(TUNING_PREFIXES)}
    write_result(path, {"times": times, "threads": torch.get_num_threads(), "env": env,
                        **extra})


def write_train_result(path: str | Path, rank: int, walls: list[float], cpus: list[float],
                       tokens_per_step: int) -> None:
    """Every rank's step times (the cost model's straggler term), in PATH.rankR; rank 0's
    figures in PATH: tokens/s = tokens per step / median over blocks of mean step time."""
    write_result(rank_path(path, rank), {"step_times": walls})
    if rank != 0:
        return
    blocks = [sum(walls[i:i + BLOCK]) / BLOCK for i in range(0, len(walls) - BLOCK + 1, BLOCK)]
    step = statistics.median(blocks or walls)
    write_result(path, {"tokens_per_s": tokens_per_step / step,
                        "cpu_s_per_step": statistics.median(cpus)})
