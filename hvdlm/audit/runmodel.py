"""A run's model on a device, and the three things the audit asks of it, batched.

Only the models' forward (idx (B, T) -> logits (B, T, V)) is used, so GPT and the recurrent
models are treated alike: each sees at most the last `model.seq_len` tokens, the context it
was trained on (as hvdlm.generate does).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hvdlm.config import config_from_dict
from hvdlm.errors import UsageError
from hvdlm.models.decoding import keep_top_k
from hvdlm.text.tokenizer import Tokenizer
from hvdlm.training import checkpoint


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
    state = checkpoint.load_run_state(run, checkpoint_path)
    state.require_tokenizer(tokenizer.sha256, tokenizer.source)
    cfg = config_from_dict(state.config).model
    return AuditModel(checkpoint.model_of(state).to(device), device, cfg.seq_len,
                      tokenizer.eos_id, cfg.vocab_size, cfg.arch, state.step)


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
def continue_batch(lm: AuditModel, prompts: torch.Tensor, steps: int, temperature: float = 0.0,
                   generator: torch.Generator | None = None, top_k: int = 0) -> torch.Tensor:
    """prompts (B, T) -> the next `steps` tokens (B, steps): greedy for temperature 0, else
    sampled, from the `top_k` likeliest tokens if > 0 (end-of-text is a token like any other
    here)."""
    out = prompts.to(lm.device)
    for _ in range(steps):
        context = out[:, -lm.seq_len:]
        logits = lm.model(context)[:, -1].float()  # (B, V)
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            if top_k:
                logits = keep_top_k(logits, top_k)
            probs = torch.softmax(logits / temperature, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        out = torch.cat([out, token[:, None]], dim=1)
    return out[:, prompts.shape[1]:].cpu()
