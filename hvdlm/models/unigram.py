"""The unigram baseline: every position predicts the training set's token frequencies.

A model (same interface as the others) so that `hvdlm.training.scoring` scores it on
exactly the windows and targets a trained model is scored on: a fair "did we learn anything
beyond token frequencies" line in the demo and in reports.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class UnigramLM(nn.Module):
    def __init__(self, counts: np.ndarray):
        super().__init__()
        probs = (counts.astype(np.float64) + 1.0) / (counts.sum() + len(counts))  # add-one
        self.register_buffer("log_probs", torch.from_numpy(np.log(probs)).float())

    @classmethod
    def fit(cls, token_arrays, vocab_size: int) -> "UnigramLM":
        counts = np.zeros(vocab_size, dtype=np.int64)
        for tokens in token_arrays:
            counts += np.bincount(np.asarray(tokens), minlength=vocab_size)[:vocab_size]
        return cls(counts)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> the same log-probabilities at every position, (B, T, V)."""
        return self.log_probs.expand(*idx.shape, -1)
