"""Mixed precision for training: the autocast dtype, TF32, and fp16's dynamic loss scaling.

    python -m hvdlm.train --data DATA --out RUN train.precision=fp16

bf16 has fp32's exponent range and needs no scaling; fp16's gradients underflow to zero unless
the loss is multiplied by a large scale S before backward (and the gradients divided by S
before the step). Dynamic scaling (Micikevicius et al., 2018) starts S high, halves it when a
step's gradients overflow (that step is skipped) and doubles it after `growth_interval` good
steps in a row. Under Horovod every rank must take the same decision from the same averaged
gradients; the trainer agrees on overflow across ranks (distributed.any_rank) before calling
`update`, so every rank's scaler holds the same state. Pure PyTorch, unlike
torch.amp.GradScaler, whose per-rank decision Horovod's wrapped optimizer cannot share.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch


def autocast_dtype(precision: str) -> torch.dtype | bool:
    """What `window_loss` autocasts to: False (fp32), torch.bfloat16 or torch.float16."""
    return {"fp32": False, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def use_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 matmuls and convolutions on CUDA (10-bit mantissa inputs, fp32 accumulation)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


class LossScaler:
    """fp16's dynamic loss scale; disabled (scale 1, never skips) for fp32 and bf16."""

    def __init__(self, enabled: bool, init_scale: float = 2.0 ** 16, growth_interval: int = 2000,
                 min_scale: float = 1.0):
        self.enabled = enabled
        self.scale = init_scale if enabled else 1.0
        self.growth_interval, self.min_scale = growth_interval, min_scale
        self.good_steps = 0    # finite steps since the last overflow or growth
        self.overflows = 0     # steps skipped for overflow, over the whole run

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.enabled else loss

    def unscale_(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Divide the (averaged) gradients by the scale, in place, before clipping."""
        if self.enabled:
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, 1.0 / self.scale)

    def update(self, overflow: bool) -> None:
        """After a step every rank agreed on: halve on overflow, grow after a good stretch."""
        if not self.enabled:
            return
        if overflow:
            self.overflows += 1
            self.scale = max(self.scale / 2, self.min_scale)
            self.good_steps = 0
            return
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= 2
            self.good_steps = 0

    @property
    def at_minimum(self) -> bool:
        """An overflow here cannot be a scale that is too high: the loss itself diverged."""
        return self.scale <= self.min_scale

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "good_steps": self.good_steps, "overflows": self.overflows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self.good_steps, self.overflows = int(state["good_steps"]), int(state["overflows"])
