"""Per-token scores of token windows, noted during training's own scoring pass.

The totals (loss, perplexity, bits per byte, accuracy) come from
`hvdlm.training.scoring.score_windows`, the function `python -m hvdlm.evaluate` calls, so on the
same windows they are evaluate's numbers by construction. The per-token numbers (surprisal,
top-k predictions, confidence) are taken from the logits of that same forward pass: the model
is wrapped so that each call also notes them. Also here: the calibration table, histograms.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from hvdlm.training.scoring import score_windows


@dataclass
class TokenScores:
    """One row per predicted token, windows in the order scored, each window left to right."""

    nll: np.ndarray                # (N,) float64, nats: -log p(target)
    confidence: np.ndarray         # (N,) probability of the top prediction
    correct: np.ndarray            # (N,) bool: the top prediction (argmax) is the target
    top_ids: np.ndarray | None     # (N, k) the k likeliest next tokens, likeliest first
    top_probs: np.ndarray | None   # (N, k) their probabilities

    @property
    def bits(self) -> np.ndarray:
        return self.nll / math.log(2)


def token_stats(logits: torch.Tensor, targets: torch.Tensor, top_k: int) -> dict[str, np.ndarray]:
    """Per-token numbers of logits (B, T, V) against targets (B, T), flattened row by row."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    nll = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    best, argmax = log_p.max(dim=-1)
    out = {"nll": nll, "confidence": best.exp(), "correct": argmax == targets}
    if top_k:
        top = log_p.topk(min(top_k, log_p.size(-1)), dim=-1)
        out |= {"top_ids": top.indices, "top_probs": top.values.exp()}
    return {k: v.reshape(-1, *v.shape[2:]).cpu().numpy() for k, v in out.items()}


class _Noting(nn.Module):
    """The model as `score_windows` sees it: each forward pass also notes the per-token numbers
    of the window it was given. `feed` queues the windows in the order they are read."""

    def __init__(self, model: nn.Module, top_k: int):
        super().__init__()
        self.model, self.top_k = model, top_k
        self.queue: deque[torch.Tensor] = deque()
        self.rows: list[dict[str, np.ndarray]] = []

    def feed(self, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for window in batches:
            self.queue.append(window)
            yield window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self.queue.popleft()  # (B, T + 1); score_windows passes window[:, :-1]
        logits = self.model(x)
        self.rows.append(token_stats(logits, window[:, 1:].to(logits.device), self.top_k))
        return logits


def score(model: nn.Module, batches: Iterable[torch.Tensor], token_bytes: torch.Tensor,
          device: torch.device, top_k: int = 5) -> tuple[dict[str, float], TokenScores]:
    """evaluate's totals over `batches` of windows (B, T + 1), and every token's scores."""
    noting = _Noting(model, top_k)
    totals = score_windows(noting, noting.feed(batches), token_bytes, device)
    rows = noting.rows
    joined = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    return totals, TokenScores(nll=joined["nll"].astype(np.float64),
                               confidence=joined["confidence"], correct=joined["correct"],
                               top_ids=joined.get("top_ids"), top_probs=joined.get("top_probs"))


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> dict:
    """Reliability table over equal-width confidence bins and the expected calibration error:
    ECE = sum over bins of (tokens in bin / tokens) * |accuracy - mean confidence|."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence.astype(np.float64), minlength=bins)
    right = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    ece = float(np.abs(right - conf_sum).sum() / max(len(confidence), 1))
    mean = [None if n == 0 else float(s / n) for s, n in zip(conf_sum, count)]
    acc = [None if n == 0 else float(r / n) for r, n in zip(right, count)]
    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": mean,
            "accuracy": acc, "ece": ece}


def histogram(values: np.ndarray, bins: int = 40) -> dict:
    """Counts of `values` in equal-width bins from 0 to their maximum."""
    top = float(values.max()) if len(values) else 1.0
    count, edges = np.histogram(values, bins=bins, range=(0.0, max(top, 1e-9)))
    return {"edges": edges.tolist(), "count": count.tolist()}
