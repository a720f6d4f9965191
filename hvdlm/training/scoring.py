"""Scoring token windows: the loss training minimises and the totals evaluation reports.

A window is seq_len + 1 tokens: the model reads window[:, :-1] and is scored on window[:, 1:].
Loss is in nats per predicted token; bits per byte divides the summed loss by ln 2 and by the
exact UTF-8 byte length of the predicted tokens, so it compares across tokenizers. Training,
`python -m hvdlm.evaluate` and the periodic evaluation all go through `window_loss`.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from hvdlm.errors import DataError
from hvdlm.text.tokenizer import Tokenizer

Reduce = Callable[[torch.Tensor], torch.Tensor]


def window_loss(model: torch.nn.Module, window: torch.Tensor,
                autocast: bool | torch.dtype = False,
                reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross-entropy, fp32 logits, targets) of next-token prediction over `window` (B, T+1);
    `autocast`: True for bf16, or the dtype (training/precision.py)."""
    x, y = window[:, :-1], window[:, 1:]
    dtype = autocast if isinstance(autocast, torch.dtype) else torch.bfloat16
    with torch.autocast(window.device.type, dtype=dtype, enabled=autocast is not False):
        logits = model(x)                                            # (B, T, vocab)
    logits = logits.float()  # the loss in fp32 under bf16/fp16 autocast
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                           reduction=reduction)
    return loss, logits, y


def byte_lengths(tokenizer: Tokenizer) -> torch.Tensor:
    """UTF-8 bytes of each token id, for bits per byte."""
    return torch.from_numpy(np.asarray(tokenizer.token_byte_lengths(), dtype=np.int64))


@torch.no_grad()
def score_windows(model: torch.nn.Module, batches: Iterable[torch.Tensor],
                  token_bytes: torch.Tensor, device: torch.device,
                  autocast: bool | torch.dtype = False,
                  reduce: Reduce = lambda t: t) -> dict[str, float]:
    """Sum loss, correct predictions, tokens and bytes over `batches`, then `reduce` them
    (a sum over ranks during training) into loss, perplexity, bits per byte and accuracy."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64)  # loss (nats), correct, tokens, bytes
    for window in batches:
        loss, logits, y = window_loss(model, window.to(device, non_blocking=True), autocast,
                                      reduction="sum")
        totals += torch.tensor([loss.item(), (logits.argmax(-1) == y).sum().item(), y.numel(),
                                token_bytes[y.cpu()].sum().item()], dtype=torch.float64)
    model.train(was_training)
    loss_sum, correct, tokens, n_bytes = reduce(totals).tolist()
    if tokens == 0:
        raise DataError("evaluation saw no tokens")
    loss = loss_sum / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
            "bits_per_byte": loss_sum / math.log(2) / max(n_bytes, 1.0),
            "accuracy": correct / tokens, "tokens": int(tokens)}
