"""Gradient clipping (train.grad_clip): the update the optimizer applies is the one of the
gradients scaled down to norm grad_clip when their global norm is larger; train.grad_clip=0
means no clipping. Through hvdlm.cluster.distributed.clip_and_step (the trainer's only path to
the optimizer) in a world of one, and through the Trainer itself: the gradients the optimizer
steps on, seen from a step pre-hook, against the norm the run logs.

    .venv/bin/python -m pytest tests/training/test_clipping.py
"""
from __future__ import annotations


import pytest
import torch

from hvdlm.cluster.distributed import World, clip_and_step
from hvdlm.config import load_config
from hvdlm.training.trainer import Callback, Trainer
from tests.conftest import TINY_RUN, logged_steps

WORLD = World(rank=0, size=1, local_rank=0, local_size=1, device=torch.device("cpu"))


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]


def _grads(scale: float) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [scale * torch.randn(3, 4), scale * torch.randn(5)]


def _norm(tensors) -> float:
    return float(torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in tensors])))


@pytest.mark.parametrize("max_norm", [0.0, 0.5, 1e6])
def test_sgd_update_is_the_clipped_gradient(max_norm):
    """With SGD (lr 1) the parameter change is minus the gradient the optimizer received."""
    params = _params()
    before = [p.detach().clone() for p in params]
    grads = _grads(3.0)
    raw = _norm(grads)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    norm, stepped = clip_and_step(torch.optim.SGD(params, lr=1.0), params, max_norm)
    assert stepped and float(norm) == pytest.approx(raw, rel=1e-6)  # the norm before clipping
    scale = min(1.0, max_norm / raw) if max_norm > 0 else 1.0
    assert raw > 2 * 0.5  # so the 0.5 case really clips
    for p, b, g in zip(params, before, grads):
        torch.testing.assert_close(b - p.detach(), scale * g, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in params)  # zeroed for the next step


def test_adamw_steps_on_the_clipped_gradients():
    """Two AdamW steps, the first clipped hard, equal AdamW fed the clipped gradients by hand
    (AdamW's first step alone barely depends on the gradient's size; the second does)."""
    params, reference = _params(), _params()
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.1)
    ref_opt = torch.optim.AdamW(reference, lr=0.1, weight_decay=0.1)
    for scale in (50.0, 0.01):  # 50x clipped to norm 1, then below the bound: unchanged
        grads = _grads(scale)
        factor = min(1.0, 1.0 / _norm(grads))
        for p, r, g in zip(params, reference, grads):
            p.grad, r.grad = g.clone(), factor * g
        clip_and_step(opt, params, 1.0)
        ref_opt.step()
    for p, r in zip(params, reference):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-5, atol=1e-7)


def test_non_finite_gradients_skip_the_step():
    params = _params()
    before = [p.detach().clone() for p in params]
    grads = _grads(1.0)
    grads[1][2] = float("nan")
    for p, g in zip(params, grads):
        p.grad = g
    _, stepped = clip_and_step(torch.optim.SGD(params, lr=1.0), params, 1.0)
    assert not stepped
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)


class GradNormAtStep(Callback):
    """The global norm of the gradients at the moment the optimizer steps, every step."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.hooked = False

    def on_step_start(self, trainer: Trainer) -> None:
        if not self.hooked:
            params = list(trainer.model.parameters())
            trainer.optimizer.register_step_pre_hook(
                lambda *_: self.norms.append(_norm([p.grad for p in params
                                                    if p.grad is not None])))
            self.hooked = True


# A Trainer in this process installs signal handlers: pytest gets its own back after.
pytestmark = pytest.mark.usefixtures("own_signal_handlers")


@pytest.mark.parametrize("grad_clip", [0.0, 0.05])
def test_the_trainer_steps_on_gradients_clipped_to_train_grad_clip(byte_dataset, tmp_path,
                                                                   grad_clip):
    run = tmp_path / "run"
    run.mkdir()
    seen = GradNormAtStep()
    cfg = load_config(None, [*TINY_RUN, "train.max_steps=3", "train.eval_interval=100",
                             "train.ckpt_interval=100", f"train.grad_clip={grad_clip}"])
    assert Trainer(cfg, byte_dataset, run, WORLD, "never", [seen]).run() == 0
    logged = [r["grad_norm"] for r in logged_steps(run)]  # the norm before clipping
    assert len(seen.norms) == len(logged) == 3
    for at_step, raw in zip(seen.norms, logged):
        if grad_clip:
            assert raw > 2 * grad_clip  # a tiny model's first steps: clipping really applies
            assert at_step == pytest.approx(grad_clip, rel=1e-4)
        else:
            assert at_step == pytest.approx(raw, rel=1e-5)
