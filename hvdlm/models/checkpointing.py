"""Activation checkpointing of a model's blocks (`train.activation_checkpointing=true`).

Each block then keeps only its input for backward and recomputes its inside there: the
activations held drop from every block's to one block's at a time, for about a third more
compute. Non-reentrant `torch.utils.checkpoint` replays dropout with the same random state,
so loss and gradients equal those without it.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, recompute: bool) -> torch.Tensor:
    """x through every block in turn; `recompute`: checkpoint each (training only)."""
    for block in blocks:
        x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
    return x
