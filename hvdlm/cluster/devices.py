"""Which GPU each rank trains on, and the two ways that goes wrong, told in one line.

Called by distributed.init() for train.device=cuda (or auto with CUDA). Two layouts are right:

  every GPU visible     each task sees all of the node's GPUs (`srun --gres=gpu:4`, horovodrun):
                        local rank i takes GPU i
  one set per task      the launcher gave each task its own (`srun --gpus-per-task=1`,
                        `--gpu-bind=single:1`, a per-task CUDA_VISIBLE_DEVICES): each task
                        takes the first GPU it sees

The local rank is Horovod's (hvdlm.launch sets it from SLURM_LOCALID). A rank that sees no
GPU, or a node with more ranks than GPUs, is refused before any step; after Horovod starts,
each rank's GPU identity (host and UUID) is gathered and a GPU two ranks chose is refused too
(e.g. `--gpu-bind=closest` giving two tasks the same GPU). CUDA is only asked at the edge
(the device count, the UUID), so every case is tested on CPU with the environment set.
"""
from __future__ import annotations

import hashlib
import os
import socket
from typing import Mapping, Sequence

import torch

from hvdlm.errors import UsageError

PER_TASK_HINTS = ("SLURM_GPUS_PER_TASK", "SLURM_GPU_BIND")  # srun's per-task GPU binding
ONE_PER_RANK = ("give each rank its own GPU (srun --gpus-per-task=1, or as many GPUs visible "
                "as ranks per node), or train.device=cpu")


def _gpus_listed(value: str) -> int:
    return len([g for g in value.split(",") if g.strip()])


def bound_per_task(visible: int, env: Mapping[str, str] = os.environ) -> bool:
    """Whether the launcher gave each task its own GPUs (then the ones a task sees are its)."""
    step_gpus = _gpus_listed(env.get("SLURM_STEP_GPUS", "") or env.get("SLURM_JOB_GPUS", ""))
    return any(env.get(name) for name in PER_TASK_HINTS) or step_gpus > visible


def gpu_index(local_rank: int, local_size: int, visible: int,
              env: Mapping[str, str] = os.environ) -> int:
    """This rank's CUDA device number among the `visible` GPUs it sees; UsageError when it has
    none of its own."""
    shown = env.get("CUDA_VISIBLE_DEVICES")
    seen = f"CUDA_VISIBLE_DEVICES={shown}" if shown is not None else "CUDA_VISIBLE_DEVICES unset"
    if visible == 0:
        raise UsageError(f"local rank {local_rank} sees no GPU ({seen}) but train.device is "
                         f"cuda: {ONE_PER_RANK}")
    if visible >= local_size:
        return local_rank  # every GPU visible (or a set per task as large as the node's ranks)
    if bound_per_task(visible, env):
        return 0           # this task's own GPU(s): the first
    raise UsageError(f"{local_size} ranks on this node but each sees only {visible} GPU(s) "
                     f"({seen}): two ranks would share one; {ONE_PER_RANK}")


def gpu_key(device: torch.device, host: str | None = None, uuid: str | None = None) -> int:
    """A number naming this physical GPU across the job (host and UUID), for `refuse_shared`."""
    host = host or socket.gethostname()
    if uuid is None:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
    return int.from_bytes(hashlib.sha256(f"{host}/{uuid}".encode()).digest()[:7], "big")


def refuse_shared(keys: Sequence[int]) -> None:
    """UsageError if two ranks (keys in rank order, from `gpu_key`) chose the same GPU."""
    first: dict[int, int] = {}
    for rank, key in enumerate(keys):
        if key in first:
            raise UsageError(f"ranks {first[key]} and {rank} would share one GPU: "
                             f"{ONE_PER_RANK}")
        first[key] = rank
