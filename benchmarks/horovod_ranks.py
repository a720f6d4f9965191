"""One Horovod rank of a benchmark job (started by the drivers through benchmarks.harness).

    python -m benchmarks.horovod_ranks allreduce --config hvdlm|defaults --sizes B,... --iters N
        --result PATH
    python -m benchmarks.horovod_ranks train --config hvdlm|hvdlm-nostats|hvdlm-nograds
        --data DIR --micro-batch B --steps N --result PATH --run-dir DIR
    (the driver adds --cores-per-rank K --torch-port P --device cpu|cuda:
    benchmarks.harness.Launch)

allreduce: in-place float32 SUM allreduces, after `hvdlm.cluster.distributed.init` (config
hvdlm: hvdlm's Horovod settings) or a bare `hvd.init()` (defaults: Horovod's own); on
--device cuda of tensors on each rank's GPU, which Horovod reduces with NCCL when it was built
with it (HOROVOD_GPU_OPERATIONS=NCCL; the result records `nccl_built`).
train: hvdlm's trainer through its public API (`hvdlm.training.trainer.train`), with a
`StepTimer` callback; hvdlm-nostats and hvdlm-nograds leave out the per-step metrics allreduce
or the gradient allreduce (`sync_step_stats`, `sync_gradients`).
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

import horovod.torch as hvd
import torch

from benchmarks import ranks
from benchmarks.harness import StepClock, nccl_env, pin_rank, rank_device, start_rank
from benchmarks.workload import BLOCK, MODEL, TORCH_CONFIGS, TRAIN_CONFIGS, hvdlm_overrides
from hvdlm.cluster import distributed
from hvdlm.config import load_config
from hvdlm.training.trainer import Callback, Trainer, train

ALLREDUCE_CONFIGS = ("hvdlm", "defaults")
HOROVOD_TRAIN_CONFIGS = tuple(c for c in TRAIN_CONFIGS if c not in TORCH_CONFIGS)


class StepTimer(Callback):
    """Ticks a StepClock at the start of every step: the whole loop iteration counts
    (clipping, the metrics allreduce, logging), as in the DDP loop's timing."""

    def __init__(self, device: str = "cpu") -> None:
        self.clock = StepClock()
        self.cuda = device == "cuda"

    def on_step_start(self, trainer: Trainer) -> None:
        if self.cuda:  # the GPU's queue, not the Python loop, decides when a step is done
            torch.cuda.synchronize()
        self.clock.tick()


def allreduce(config: str, sizes: Sequence[int], iters: int, result: str,
              cores_per_rank: int, device: str = "cpu") -> None:
    """Time `iters` in-place allreduces of each size; rank 0 writes the medians."""
    pin_rank(cores_per_rank)
    if device == "cuda":
        os.environ.update(nccl_env())
    if config == "hvdlm":
        dev = distributed.init(device).device  # its own GPU mapping
    else:
        dev = rank_device(device)
    if not hvd.is_initialized():  # hvdlm leaves a world of one without Horovod
        hvd.init()
    times = ranks.time_allreduce(lambda t: hvd.allreduce_(t, op=hvd.Sum, name="bench"), sizes,
                                 iters, dev)
    rank = hvd.rank()
    hvd.shutdown()
    if rank == 0:
        ranks.write_allreduce_result(result, times, nccl_built=bool(hvd.nccl_built()))


def train_rank(config: str, data: str, micro_batch: int, steps: int, run_dir: str,
               result: str, cores_per_rank: int, device: str = "cpu") -> None:
    """Train with hvdlm in this (pinned) process; report every step's time after BLOCK."""
    rank, size = start_rank(result, cores_per_rank)
    if device == "cuda":
        os.environ.update(nccl_env())
    timer = StepTimer(device)
    cfg = load_config(None, hvdlm_overrides(micro_batch, steps, device))
    # nograds: the ranks' models drift apart; their throughput is the point.
    code = train(cfg, data, run_dir, resume="never", callbacks=[timer],
                 sync_gradients=config != "hvdlm-nograds",
                 sync_step_stats=config != "hvdlm-nostats")
    if code != 0:
        raise SystemExit(code)
    ranks.write_train_result(result, rank, *timer.clock.deltas(BLOCK),
                             size * micro_batch * MODEL["seq_len"])


def main(argv: Sequence[str] | None = None) -> int:
    args = ranks.parse_args("benchmarks.horovod_ranks", ALLREDUCE_CONFIGS,
                            HOROVOD_TRAIN_CONFIGS, argv)
    if args.task == "allreduce":
        allreduce(args.config, args.sizes, args.iters, args.result, args.cores_per_rank,
                  args.device)
    else:
        train_rank(args.config, args.data, args.micro_batch, args.steps, args.run_dir,
                   args.result, args.cores_per_rank, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
