"""Every range check of hvdlm.config.validate at its boundary: the last value accepted and the
first refused, refused in the exact one-line message naming the key (the mutation run,
scripts/mutation.sh config, found most of these bounds unguarded).

    .venv/bin/python -m pytest tests/test_config_bounds.py
"""
from __future__ import annotations

import pytest

from hvdlm.config import load_config
from hvdlm.errors import UsageError

# key, last accepted, first refused, message after "config key KEY "
BOUNDS = [
    ("model.n_layer", "1", "0", "must be >= 1"),
    ("model.n_embd", "2", "0", "must be >= 1"),
    ("model.n_head", "1", "0", "must be >= 1"),
    ("model.rope_theta", "1e-9", "0", "must be > 0"),
    ("model.ffn_hidden", "0", "-1", "must be >= 0 (0 = Llama's rule)"),
    ("model.seq_len", "1", "0", "must be >= 1"),
    ("model.kernel_size", "1", "0", "must be >= 1"),
    ("model.dilation_growth", "1", "0", "must be >= 1 (1 = no dilation)"),
    ("model.dropout", "0.0", "-0.1", "must be in [0, 1)"),
    ("model.dropout", "0.999", "1.0", "must be in [0, 1)"),
    ("train.micro_batch", "1", "0", "must be >= 1"),
    ("train.grad_accum", "1", "0", "must be >= 1"),
    ("train.global_batch", "0", "-1", "must be >= 0 (0 = use train.grad_accum)"),
    ("train.max_steps", "1", "0", "must be >= 1"),
    ("train.lr", "0.001", "0", "must be > 0"),  # = train.min_lr
    ("train.min_lr", "0", "-1e-9", "must be in [0, train.lr]"),
    ("train.min_lr", "0.01", "0.0100001", "must be in [0, train.lr]"),
    ("train.warmup_steps", "0", "-1", "must be >= 0"),
    ("train.weight_decay", "0", "-0.1", "must be >= 0"),
    ("train.schedule_steps", "0", "-1", "must be >= 0 (0 = train.max_steps)"),
    ("train.beta1", "0", "-0.1", "must be in [0, 1)"),
    ("train.beta1", "0.999", "1", "must be in [0, 1)"),
    ("train.beta2", "0", "-0.1", "must be in [0, 1)"),
    ("train.beta2", "0.999", "1", "must be in [0, 1)"),
    ("train.grad_clip", "0", "-0.1", "must be >= 0 (0 disables clipping)"),
    ("train.shard_optimizer", "2", "3", "must be 0, 1 or 2"),
    ("train.shard_optimizer", "0", "-1", "must be 0, 1 or 2"),
    ("train.eval_interval", "1", "0", "must be >= 1"),
    ("train.eval_batches", "0", "-1", "must be >= 0"),
    ("train.ckpt_interval", "1", "0", "must be >= 1"),
    ("train.keep_checkpoints", "1", "0", "must be >= 1"),
    ("train.log_interval", "1", "0", "must be >= 1"),
    ("train.num_workers", "0", "-1", "must be >= 0"),
    ("train.max_bad_steps", "0", "-1", "must be >= 0"),
    ("train.peak_flops", "1e-9", "0", "must be > 0"),
    ("train.loss_scale_init", "1", "0.5", "must be >= 1"),
    ("train.loss_scale_growth_interval", "1", "0", "must be >= 1"),
]
BASE = ["model.n_layer=1", "model.n_head=1", "model.n_kv_head=0", "model.n_embd=8",
        "train.lr=0.01", "train.min_lr=0.001"]


def _load(*overrides: str):
    return load_config(None, [*BASE, *overrides])


@pytest.mark.parametrize("key, good, bad, message", BOUNDS)
def test_each_bound(key, good, bad, message):
    _load(f"{key}={good}")
    with pytest.raises(UsageError) as err:
        _load(f"{key}={bad}")
    name = "train.beta1/beta2" if key.startswith("train.beta") else key
    assert str(err.value) == f"config key {name} {message}"


def test_head_shapes():
    _load("model.n_embd=12", "model.n_head=3")
    with pytest.raises(UsageError) as err:
        _load("model.n_embd=10", "model.n_head=3")
    assert str(err.value) == "config key model.n_embd (10) must be divisible by model.n_head (3)"
    _load("model.arch=llama", "model.n_embd=8", "model.n_head=2", "model.n_kv_head=1")
    with pytest.raises(UsageError) as err:
        _load("model.arch=llama", "model.n_embd=6", "model.n_head=2")
    assert str(err.value) == ("config key model.n_embd (6) / model.n_head (2) must be even "
                              "(rotary pairs)")
    _load("model.arch=lstm", "model.n_embd=10", "model.n_head=3")  # heads mean nothing there
    with pytest.raises(UsageError) as err:
        _load("model.n_head=4", "model.n_kv_head=3")
    assert str(err.value) == ("config key model.n_kv_head (3) must divide model.n_head (4); "
                              "0 = model.n_head")
