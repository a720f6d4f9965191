"""Autoregressive sampling from any of the models: temperature, top-k, end-of-text.

The plain interface (token ids in, token ids out); hvdlm/models/decoding.py runs the loop and
adds top-p, repetition penalty, stop and banned strings and a time limit.
"""
from __future__ import annotations

import torch

from hvdlm.models.decoding import DecodeOptions, continue_text


def sample(model: torch.nn.Module, ids: list[int], max_new_tokens: int, seq_len: int,
           temperature: float = 1.0, top_k: int = 0, eos_id: int | None = None,
           generator: torch.Generator | None = None) -> list[int]:
    """Autoregressive sampling; the model sees at most the last `seq_len` tokens."""
    options = DecodeOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
    return continue_text(model, ids, options, seq_len=seq_len, eos_id=eos_id,
                         generator=generator).tokens
