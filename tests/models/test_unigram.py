"""The unigram baseline against its closed form: counts -> add-one probabilities -> the same
log-probabilities at every position, and the cross-entropy that follows from them.

    .venv/bin/python -m pytest tests/models/test_unigram.py
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hvdlm.models.unigram import UnigramLM


def test_fit_counts_every_array_and_smooths_by_one():
    # Counts of ids 0-4 over both arrays: 3, 1, 0, 2, 0 (6 tokens, 5 ids).
    model = UnigramLM.fit([np.array([0, 0, 1, 3]), np.array([3, 0], dtype=np.uint32)], 5)
    expected = [math.log(c / 11) for c in (4, 2, 1, 3, 1)]  # (count + 1) / (6 + 5)
    logits = model(torch.zeros(2, 3, dtype=torch.long))
    assert logits.shape == (2, 3, 5)
    for row in logits.reshape(-1, 5):
        assert row.tolist() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_is_minus_the_mean_log_probability_of_the_targets():
    model = UnigramLM(np.array([5, 0, 1]))  # p = 6/9, 1/9, 2/9
    targets = torch.tensor([[0, 0, 2, 1]])
    logits = model(torch.zeros_like(targets))
    loss = F.cross_entropy(logits.reshape(-1, 3), targets.reshape(-1))
    by_hand = -(2 * math.log(6 / 9) + math.log(2 / 9) + math.log(1 / 9)) / 4
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)

