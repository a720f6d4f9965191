"""The peer: a minimal torch.distributed (Gloo) + DistributedDataParallel training loop.

Nothing here imports Horovod. The benchmarks start these ranks with hvdlm.launch's
`run_on_hosts`, which writes Horovod-style HOROVOD_RANK/SIZE/... variables; `init_torch_dist`
reads the same variables, so both stacks get the same rank plan, addresses and interfaces.
`pin_to_share` gives each local rank an equal, disjoint share of this process's cores, so N
ranks use N times the resources of one.

    python -m benchmarks.scaling --np 1,2 --backends horovod,ddp   (runs this loop as `ddp`)
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PORT_ENV = "HVDLM_BENCH_TORCH_PORT"
SHARE_ENV = "HVDLM_BENCH_CORES_PER_RANK"  # set by the drivers: cores // the most ranks per host


def pin_rank() -> list[int]:
    """Pin this rank to its share of the cores; see `pin_to_share`.

    The drivers run every rank on this machine (emulated hosts included) and set
    $HVDLM_BENCH_CORES_PER_RANK: ranks are then placed by global rank, k cores each, so a
    1-rank baseline gets exactly the share of one rank of the largest run. Without it (ranks
    started by srun on real nodes) each node's local ranks split that node's cores.
    """
    rank, _, local_rank, local_size = env_rank()
    if os.environ.get(SHARE_ENV):
        return pin_to_share(rank, int(os.environ[SHARE_ENV]))
    return pin_to_share(local_rank, max(1, len(os.sched_getaffinity(0)) // local_size))


def pin_to_share(index: int, share: int) -> list[int]:
    """Pin this process to cores [index·share, (index+1)·share) of its allowed cores.

    Call before any thread pool starts (hvd.init, torch ops), so every thread inherits it.
    With fewer cores than index·share, ranks wrap round. Returns the cores kept.
    """
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, min(share, len(cores)))
    first = (index * share) % len(cores)
    mine = cores[first:first + share]
    os.sched_setaffinity(0, mine)
    return mine


def quiet(log: str) -> None:
    """Send this rank's stdout and stderr (progress bars, logs) to `log`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def env_rank() -> tuple[int, int, int, int]:
    """(rank, size, local_rank, local_size) from the HOROVOD_* variables; a lone process is 0/1."""
    get = os.environ.get
    return (int(get("HOROVOD_RANK", 0)), int(get("HOROVOD_SIZE", 1)),
            int(get("HOROVOD_LOCAL_RANK", 0)), int(get("HOROVOD_LOCAL_SIZE", 1)))


def init_torch_dist() -> tuple[int, int]:
    """torch.distributed Gloo on rank 0's rendezvous address and the launcher-chosen port."""
    import torch.distributed as dist
    rank, size, _, _ = env_rank()
    addr = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR", "127.0.0.1")
    if os.environ.get("HOROVOD_GLOO_IFACE"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", os.environ["HOROVOD_GLOO_IFACE"])
    dist.init_process_group("gloo", init_method=f"tcp://{addr}:{os.environ[PORT_ENV]}",
                            rank=rank, world_size=size)
    return rank, size


@dataclass
class LoopResult:
    step_times: list[float]   # wall seconds per optimizer step, after warm-up
    cpu_times: list[float]    # CPU seconds of the whole process (all threads) per step
    tokens_per_step: int      # this rank's tokens per step


class StepClock:
    """Wall and process CPU time between consecutive `tick()`s (one tick per step start)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def tick(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def deltas(self, skip: int) -> tuple[list[float], list[float]]:
        pairs = list(zip(self.marks, self.marks[1:]))[skip:]
        return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]


def train_steps(model: torch.nn.Module, batches: list[torch.Tensor], steps: int, warmup: int,
                lr: float = 3e-4, distributed: bool = False) -> LoopResult:
    """AdamW steps over `batches` (cycled): forward, loss, backward, step; timed per step.

    With `distributed`, the model is wrapped in DistributedDataParallel (Gloo, CPU), which
    averages gradients in buckets during backward. No clipping, no metrics: the bare minimum.
    """
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    clock = StepClock()
    for step in range(warmup + steps + 1):
        clock.tick()
        if step == warmup + steps:
            break
        batch = batches[step % len(batches)]  # (B, T+1) token ids
        x, y = batch[:, :-1], batch[:, 1:]
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    tokens = batches[0].shape[0] * (batches[0].shape[1] - 1)
    return LoopResult(*clock.deltas(warmup), tokens)
