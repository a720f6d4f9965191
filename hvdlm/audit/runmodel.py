"""A run's model on a device, and the three things the audit asks of it, batched.

Log-probabilities come from the models' forward (idx (B, T) -> logits (B, T, V)); continuations
from the one decoding loop (hvdlm/models/decoding.py), through each model's own cache. Either
way each model sees at most the last `model.seq_len` tokens, the context it was trained on (as
hvdlm.generate does).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hvdlm.errors import UsageError
from hvdlm.models.decoding import DecodeOptions, continue_batch
from hvdlm.text.tokenizer import Tokenizer
from hvdlm.training.run import Run


@dataclass
class AuditModel:
    model: torch.nn.Module
    device: torch.device
    seq_len: int          # the trained context: longer inputs are cropped to their end
    eos_id: int
    vocab_size: int
    arch: str
    step: int


def load(run: str | Path, checkpoint_path: str | None, tokenizer: Tokenizer,
         device: torch.device) -> AuditModel:
    """The run's newest sound checkpoint (or `checkpoint_path`), checked against `tokenizer`
    (DataError on a mismatch, CheckpointError without any checkpoint)."""
    opened = Run.open(run, checkpoint_path, device, tokenizer)
    cfg = opened.config.model
    return AuditModel(opened.model, opened.device, cfg.seq_len, tokenizer.eos_id,
                      cfg.vocab_size, cfg.arch, opened.step)


def rows_per_batch(lm: AuditModel, length: int, budget: int = 1 << 25) -> int:
    """Sequences per forward so that the logits stay under `budget` floats."""
    return max(1, min(4096, budget // max(1, length * lm.vocab_size)))


@torch.inference_mode()
def log_probs(lm: AuditModel, idx: torch.Tensor) -> torch.Tensor:
    """idx (B, T) -> log-probabilities (B, T, V), float32, on the model's device."""
    if idx.shape[1] > lm.seq_len:
        raise UsageError(f"a sequence of {idx.shape[1]} tokens exceeds the model's "
                         f"model.seq_len={lm.seq_len}")
    return torch.log_softmax(lm.model(idx.to(lm.device)).float(), dim=-1)


@torch.inference_mode()
def tokens_after(lm: AuditModel, prompts: torch.Tensor, steps: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None, top_k: int = 0) -> torch.Tensor:
    """prompts (B, T) -> the next `steps` tokens (B, steps): greedy for temperature 0, else
    sampled on `generator`'s device, from the `top_k` likeliest tokens if > 0 (end-of-text is
    a token like any other here)."""
    options = DecodeOptions(max_new_tokens=steps, temperature=temperature, top_k=top_k)
    rows = continue_batch(lm.model, prompts, options, seq_len=lm.seq_len, generator=generator)
    return torch.tensor([r.tokens for r in rows], dtype=torch.long).view(len(rows), steps)
