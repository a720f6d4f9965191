"""hvdlm.training.optim: the learning rate at exact steps of a small schedule, and which
parameters AdamW decays (by name, and by what one step does to them).

    .venv/bin/python -m pytest tests/training/test_optim.py
"""
from __future__ import annotations

import math

import pytest
import torch

from hvdlm.config import ModelConfig, TrainConfig
from hvdlm.models import build_model
from hvdlm.training.optim import lr_at, make_optimizer

# Warm-up over steps 0-3 to 1e-2, then cosine down to 1e-3 at step 12.
SCHEDULE = TrainConfig(lr=1e-2, min_lr=1e-3, warmup_steps=4, max_steps=12)


@pytest.mark.parametrize("step, expected", [
    (0, 2.5e-3), (1, 5e-3), (2, 7.5e-3),       # linear warm-up: lr * (step + 1) / 4
    (3, 1e-2), (4, 1e-2),                       # the peak: last warm-up step, first decay step
    (8, 5.5e-3),                                # half-way down: (lr + min_lr) / 2
    (11, 1e-3 + 4.5e-3 * (1 + math.cos(7 * math.pi / 8))),  # the last step trained
    (12, 1e-3), (50, 1e-3),                     # the end, and after it
])
def test_learning_rate_at_warm_up_peak_and_end(step, expected):
    assert lr_at(step, SCHEDULE) == pytest.approx(expected, rel=1e-12, abs=0)


def test_no_warm_up_starts_at_the_peak():
    t = TrainConfig(lr=1e-2, min_lr=0.0, warmup_steps=0, max_steps=2)
    assert [lr_at(s, t) for s in range(3)] == pytest.approx([1e-2, 5e-3, 0.0], abs=1e-15)


# -- weight decay: matrices (embeddings included, as in GPT-2/nanoGPT), never vectors --------

GPT_DECAYED = {"wte.weight", "wpe.weight"} | {
    f"blocks.{i}.{name}.weight" for i in range(2)
    for name in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")}
GPT_NOT_DECAYED = {"ln_f.weight", "ln_f.bias"} | {
    f"blocks.{i}.{name}" for i in range(2)
    for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "attn.qkv.bias",
                 "attn.proj.bias", "mlp.fc.bias", "mlp.proj.bias")}
LSTM_DECAYED = {"embed.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0",
                "rnn.weight_ih_l1", "rnn.weight_hh_l1"}
LSTM_NOT_DECAYED = {"rnn.bias_ih_l0", "rnn.bias_hh_l0", "rnn.bias_ih_l1", "rnn.bias_hh_l1",
                    "head.bias"}


def small_model(arch: str, tied: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, n_layer=2, n_head=2, n_embd=8, seq_len=4,
                                   tie_embeddings=tied, vocab_size=11))


def decay_of_each_name(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, float]:
    """The weight decay AdamW applies to each named parameter; each exactly once."""
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(by_name) == len(names) == sum(len(g["params"]) for g in opt.param_groups)
    return by_name


@pytest.mark.parametrize("arch, tied, decayed, not_decayed", [
    ("gpt", True, GPT_DECAYED, GPT_NOT_DECAYED),  # the head is wte.weight: listed once
    ("gpt", False, GPT_DECAYED | {"head.weight"}, GPT_NOT_DECAYED),
    ("lstm", True, LSTM_DECAYED, LSTM_NOT_DECAYED),
    ("lstm", False, LSTM_DECAYED | {"head.weight"}, LSTM_NOT_DECAYED),
])
def test_weight_decay_on_matrices_only(arch, tied, decayed, not_decayed):
    model = small_model(arch, tied)
    t = TrainConfig(lr=0.5, weight_decay=0.1)
    opt = make_optimizer(model, t)
    by_name = decay_of_each_name(model, opt)
    assert {n for n, wd in by_name.items() if wd == 0.1} == decayed
    assert {n for n, wd in by_name.items() if wd == 0.0} == not_decayed

    # What a step does: with zero gradients Adam's update is 0, so only the decoupled decay
    # acts, p <- p * (1 - lr * wd) on the decayed parameters, nothing on the others.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.5 * 0.1 if name in decayed else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=1e-6, atol=0,
                                   msg=f"{name}: expected x{factor}")


def test_adamw_is_fused_only_on_cuda():
    # On CPU torch's default implementation; on a GPU the fused one (one kernel for all).
    opt = make_optimizer(small_model("gpt", True), TrainConfig())
    assert not opt.defaults["fused"]


def test_moments_from_before_the_vocabulary_was_padded_are_widened():
    from hvdlm.training.trainer import pad_moments
    model = small_model("gpt", False)
    opt = make_optimizer(model, TrainConfig())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    state = opt.state_dict()
    vocab = model.cfg.vocab_size
    assert vocab < model.head.weight.shape[0]  # padded
    rows = {id(p): i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    head = rows[id(model.head.weight)]
    old = state["state"][head]["exp_avg"]
    state["state"][head]["exp_avg"] = old[:vocab].clone()  # as a checkpoint before padding
    state["state"][head]["exp_avg_sq"] = state["state"][head]["exp_avg_sq"][:vocab].clone()
    fixed = pad_moments(state, opt, vocab)
    assert fixed["state"][head]["exp_avg"].shape == model.head.weight.shape
    assert torch.equal(fixed["state"][head]["exp_avg"][:vocab], old[:vocab])
    assert not fixed["state"][head]["exp_avg"][vocab:].any()
    opt.load_state_dict(fixed)
    opt.step()  # the widened moments fit the padded head
