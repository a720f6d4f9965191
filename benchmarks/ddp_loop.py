"""The peer: a minimal torch.distributed (Gloo) + DistributedDataParallel training loop.

Nothing here imports Horovod. The benchmarks start these ranks (benchmarks.torch_ranks) with
hvdlm.launch's `run_on_hosts`, which writes Horovod-style HOROVOD_RANK/SIZE/... variables;
`init_torch_dist` reads the same variables, so both stacks get the same rank plan, addresses
and interfaces. benchmarks.harness pins each rank to an equal, disjoint share of the cores, so
N ranks use N times the resources of one.

    python -m benchmarks.scaling --np 1,2 --backends horovod,ddp   (runs this loop as `ddp`)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from benchmarks.harness import StepClock, env_rank


def init_torch_dist(port: int, backend: str = "gloo") -> tuple[int, int]:
    """torch.distributed (Gloo, or NCCL once the rank's GPU is current) on rank 0's
    rendezvous address and `port`, which the driver chose for every rank of the job (their
    --torch-port)."""
    rank, size, _, _ = env_rank()
    addr = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR", "127.0.0.1")
    if os.environ.get("HOROVOD_GLOO_IFACE"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", os.environ["HOROVOD_GLOO_IFACE"])
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}",
                            rank=rank, world_size=size)
    return rank, size


@dataclass
class LoopResult:
    step_times: list[float]   # wall seconds per optimizer step, after warm-up
    cpu_times: list[float]    # CPU seconds of the whole process (all threads) per step
    tokens_per_step: int      # this rank's tokens per step


def train_steps(model: torch.nn.Module, batches: list[torch.Tensor], steps: int, warmup: int,
                lr: float = 3e-4, distributed: bool = False,
                device: torch.device = torch.device("cpu")) -> LoopResult:
    """AdamW steps over `batches` (cycled): forward, loss, backward, step; timed per step.

    With `distributed`, the model is wrapped in DistributedDataParallel (Gloo on the CPU,
    NCCL on a GPU), which averages gradients in buckets during backward. No clipping, no
    metrics: the bare minimum. On a GPU: fused AdamW, as hvdlm's trainer uses there, and each
    step timed until the device has finished it.
    """
    cuda = device.type == "cuda"
    model = model.to(device)
    if distributed:
        model = DistributedDataParallel(model, device_ids=[device] if cuda else None)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=cuda or None)
    model.train()
    clock = StepClock()
    for step in range(warmup + steps + 1):
        if cuda:
            torch.cuda.synchronize()
        clock.tick()
        if step == warmup + steps:
            break
        batch = batches[step % len(batches)].to(device, non_blocking=True)  # (B, T+1) ids
        x, y = batch[:, :-1], batch[:, 1:]
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    tokens = batches[0].shape[0] * (batches[0].shape[1] - 1)
    return LoopResult(*clock.deltas(warmup), tokens)
