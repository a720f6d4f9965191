"""One torch.distributed rank of a benchmark job: the peers Horovod is measured against.

    python -m benchmarks.torch_ranks allreduce --config gloo --sizes B,... --iters N
        --result PATH
    python -m benchmarks.torch_ranks train --config ddp|nocomm --data DIR --micro-batch B
        --steps N --result PATH
    python -m benchmarks.torch_ranks allreduce --config nccl ... --device cuda
    (the driver adds --cores-per-rank K --torch-port P --device cpu|cuda:
    benchmarks.harness.Launch)

allreduce: torch.distributed Gloo (NCCL on --device cuda, each rank on its own GPU as
hvdlm maps them), `all_reduce` in place. train: the same model, init and
samples as hvdlm's runs, trained by the minimal loop of benchmarks/ddp_loop.py (DDP), or by
each rank alone without DDP and without a process group (nocomm). Nothing here loads Horovod.
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

import torch
import torch.distributed as dist

from benchmarks import ddp_loop, ranks
from benchmarks.harness import pin_rank, rank_device, start_rank
from benchmarks.workload import BLOCK, MODEL, SEED, TORCH_CONFIGS, model_config
from hvdlm.training.malloc import keep_freed_memory
from hvdlm.models import build_model
from hvdlm.training import data as hdata

ALLREDUCE_CONFIGS = ("gloo", "nccl")
BACKEND = {"cpu": "gloo", "cuda": "nccl"}  # torch.distributed's backend on each device


def allreduce(config: str, sizes: Sequence[int], iters: int, result: str, cores_per_rank: int,
              port: int, device: str = "cpu") -> None:
    """Time `iters` in-place allreduces of each size; rank 0 writes the medians."""
    if config != BACKEND[device]:
        raise SystemExit(f"config {config} runs on {'cuda' if config == 'nccl' else 'cpu'}, "
                         f"not --device {device}")
    pin_rank(cores_per_rank)
    dev = rank_device(device)
    rank, _ = ddp_loop.init_torch_dist(port, BACKEND[device])
    times = ranks.time_allreduce(dist.all_reduce, sizes, iters, dev)
    dist.destroy_process_group()
    if rank == 0:
        ranks.write_allreduce_result(result, times)


def train_rank(data: str, micro_batch: int, steps: int, result: str, comm: bool,
               cores_per_rank: int, port: int, device: str = "cpu") -> None:
    """The DDP loop (or, without `comm`, each rank alone). It keeps freed memory as hvdlm's
    trainer does: otherwise glibc's page faults slow some runs and not others, which no
    data-parallel stack is to blame for."""
    rank, size = start_rank(result, cores_per_rank)
    keep_freed_memory()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    dev = rank_device(device)
    distributed = comm and size > 1
    if distributed:
        ddp_loop.init_torch_dist(port, BACKEND[device])
    windows = hdata.TokenWindows(hdata.open_dataset(data), "train", MODEL["seq_len"])
    sampler = hdata.TrainBatches(hdata.GlobalOrder(len(windows), SEED), start_sample=0,
                                 start_step=0, max_steps=BLOCK + steps, micro_batch=micro_batch,
                                 grad_accum=1, rank=rank, world_size=size)
    batches = [windows.__getitems__(ids) for ids in sampler]
    torch.manual_seed(SEED)
    model = build_model(model_config(data, dropout=0.0))
    res = ddp_loop.train_steps(model, batches, steps, BLOCK, distributed=distributed,
                               device=dev)
    if distributed:
        dist.destroy_process_group()
    ranks.write_train_result(result, rank, res.step_times, res.cpu_times,
                             size * res.tokens_per_step)


def main(argv: Sequence[str] | None = None) -> int:
    args = ranks.parse_args("benchmarks.torch_ranks", ALLREDUCE_CONFIGS, TORCH_CONFIGS, argv)
    if args.task == "allreduce":
        allreduce(args.config, args.sizes, args.iters, args.result, args.cores_per_rank,
                  args.torch_port, args.device)
    else:
        train_rank(args.data, args.micro_batch, args.steps, args.result, args.config == "ddp",
                   args.cores_per_rank, args.torch_port, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
