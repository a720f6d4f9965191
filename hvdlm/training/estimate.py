"""What a config costs before it runs: parameters and a memory estimate per rank, for
`python -m hvdlm.train --print-config`.

The model is built on the meta device (shapes only, no memory), so a 124M-parameter count is
instant. Memory per rank = weights + gradients + AdamW's two moments (fp32 each: 16 bytes a
parameter) + activations kept for backward, of which the gradients and the activations do not
peak together (`Estimate.total`). Activations are a rough estimate: for the GPT
and the Llama, Korthikanti et al. (2022): s·b·h·(34 + 5·a·s/h) bytes a layer at 16 bits (twice
at fp32), plus the logits; for the recurrent and convolutional models, a few tensors of s·b·h
a layer. The real peak also holds allocator slack and temporary buffers. The plan gives each
train.shard_optimizer stage for the world size; `python -m benchmarks.memory` measures it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping

import torch

from hvdlm.config import Config
from hvdlm.models import build_model, count_parameters

FUSION_THRESHOLD = 128 << 20  # Horovod's default
BYTES_PER_PARAMETER = 4 + 4 + 8   # fp32 weight, its gradient, AdamW's two moments
RECURRENT_TENSORS = {"lstm": 10, "gru": 8, "rnn": 3, "cnn": 6}  # s·b·h tensors a layer


@dataclass
class Estimate:
    parameters: int
    weights: int       # bytes, each of the following
    gradients: int
    optimizer: int
    activations: int
    buffers: int = 0   # Horovod's fusion buffer (stage 0 on several ranks)
    gradient_copies: int = 1  # 2: the sharded step flattens them for its one reduction

    @property
    def total(self) -> int:
        """The peak: the gradients are made in backward as the activations are freed, so the
        larger of the two counts, not their sum."""
        return (self.weights + self.optimizer + self.buffers
                + max(self.activations, self.gradient_copies * self.gradients))


def count(cfg: Config) -> int:
    """The model's parameters (tied ones once), built on the meta device."""
    with torch.device("meta"):
        return count_parameters(build_model(cfg.model))


def activation_bytes(cfg: Config, checkpointing: bool | None = None) -> int:
    """Activations kept for backward; `checkpointing` (default: the config's, for gpt and cnn)
    keeps each block's input only, plus one block's inside while it is recomputed."""
    m, t = cfg.model, cfg.train
    if checkpointing is None:
        checkpointing = t.activation_checkpointing and m.arch in ("gpt", "llama", "cnn")
    s, b, h = m.seq_len, t.micro_batch, m.n_embd
    word = 2 if t.precision in ("bf16", "fp16") else 4  # autocast keeps 16-bit activations
    logits = s * b * m.vocab_size * 4 * 2   # fp32 logits and their softmax for the loss
    if m.arch in ("gpt", "llama"):  # llama: the same count, its SwiGLU ~ a 4x MLP
        per_layer = s * b * h * (34 + 5 * m.n_head * s / h) * word / 2
    else:
        per_layer = s * b * h * RECURRENT_TENSORS[m.arch] * word
    if checkpointing:
        return int(m.n_layer * s * b * h * word + per_layer + logits)
    return int(m.n_layer * per_layer + logits)


def estimate(cfg: Config, world_size: int = 1, stage: int | None = None,
             checkpointing: bool | None = None) -> Estimate:
    """Bytes per rank. `stage` (default: train.shard_optimizer) 1 and 2 keep AdamW's moments
    for a 1/N slice, padded (training/sharding.py); the gradients stay whole during backward
    at every stage here (stage 2 holds 1/N only from its reduce-scatter to the next backward),
    and the weights are whole on every rank, as in ZeRO and unlike FSDP."""
    n = count(cfg)
    stage = cfg.train.shard_optimizer if stage is None else stage
    moments = 8 * (math.ceil(n / world_size) if stage and world_size > 1 else n)
    # DistributedOptimizer fuses the gradients into a buffer Horovod allocates whole (on CPU
    # only the part the gradients fill becomes resident); the sharded step reduces in place.
    fusion = fusion_threshold() if stage == 0 and world_size > 1 else 0
    return Estimate(n, weights=4 * n, gradients=4 * n, optimizer=moments,
                    activations=activation_bytes(cfg, checkpointing), buffers=fusion,
                    gradient_copies=2 if stage and world_size > 1 else 1)


def fusion_threshold(env: Mapping[str, str] = os.environ) -> int:
    """Horovod's fusion buffer: HOROVOD_FUSION_THRESHOLD bytes, 128 MiB unless set."""
    try:
        return int(env.get("HOROVOD_FUSION_THRESHOLD") or FUSION_THRESHOLD)
    except ValueError:
        return FUSION_THRESHOLD


def size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def plan(cfg: Config, world_size: int) -> list[str]:
    """--print-config's memory plan: per rank, each train.shard_optimizer stage, with and
    without activation checkpointing (gpt, llama, cnn)."""
    can_recompute = cfg.model.arch in ("gpt", "llama", "cnn")
    lines = [f"# memory plan per rank on {world_size} rank{'s' if world_size > 1 else ''} "
             "(train.shard_optimizer; docs/sharding.md):"]
    for stage in (0, 1, 2):
        e = estimate(cfg, world_size, stage, checkpointing=False)
        line = (f"#   stage {stage}: weights {size(e.weights)}, gradients {size(e.gradients)}"
                + (f" ({size(e.gradients / world_size)} after the reduce-scatter)"
                   if stage == 2 and world_size > 1 else "")
                + f", AdamW {size(e.optimizer)}, activations ~{size(e.activations)}"
                + (f", Horovod's fusion buffer {size(e.buffers)}" if e.buffers else "")
                + f"; total ~{size(e.total)}")
        if can_recompute:
            line += (f", ~{size(estimate(cfg, world_size, stage, checkpointing=True).total)} "
                     "with activation checkpointing")
        lines.append(line + (" (this config)" if stage == cfg.train.shard_optimizer else ""))
    return lines


def describe(cfg: Config, world_size: int, vocab_source: str) -> str:
    """The lines --print-config prints after the resolved TOML."""
    e = estimate(cfg, world_size)
    t = cfg.train
    saved = activation_bytes(cfg, checkpointing=False) - e.activations

    def gib(n: int) -> str:
        return f"{n / 2**30:.2f} GiB"
    return "\n".join([
        f"# {cfg.model.arch}: {e.parameters:,} parameters (vocabulary {cfg.model.vocab_size:,}, "
        f"{vocab_source})",
        f"# global batch: {t.micro_batch} x {t.grad_accum} passes x {world_size} ranks = "
        f"{t.micro_batch * t.grad_accum * world_size} windows of {cfg.model.seq_len} tokens",
        f"# memory per rank (estimate): weights {gib(e.weights)}, gradients {gib(e.gradients)}, "
        f"AdamW {gib(e.optimizer)}, activations ~{gib(e.activations)}"
        + (f", Horovod's fusion buffer {gib(e.buffers)}" if e.buffers else "")
        + f"; total ~{gib(e.total)}"
        + (f" (activation checkpointing saves ~{gib(saved)})" if saved > 0 else ""),
        *plan(cfg, world_size),
    ])
