"""The optimizer and its schedule: AdamW with decoupled weight decay on matrices only, linear
warm-up then cosine decay. Pure PyTorch; Horovod wraps the optimizer in distributed.py.

On CUDA the AdamW is fused (one kernel for all parameters instead of several per tensor);
its results equal the loop's within rounding, and its state dict is the same.
"""
from __future__ import annotations

import math

import torch

from hvdlm.config import TrainConfig


def lr_at(step: int, t: TrainConfig) -> float:
    """Linear warm-up to `lr`, then cosine decay to `min_lr` at `schedule_steps` (0: at
    `max_steps`), then `min_lr`."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    end = t.schedule_steps or t.max_steps
    progress = (step - t.warmup_steps) / max(1, end - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def make_optimizer(model: torch.nn.Module, t: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not on biases, LayerNorm gains or other vectors);
    fused where the parameters are on a GPU."""
    params = dict(model.named_parameters())  # tied weights appear once
    decay = [p for p in params.values() if p.dim() >= 2]
    no_decay = [p for p in params.values() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=t.lr, betas=(t.beta1, t.beta2),
                             fused=all(p.is_cuda for p in params.values()) or None)
