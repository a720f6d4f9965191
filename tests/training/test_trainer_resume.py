"""The Trainer's start modes, in this process (a world of one, no Horovod): `--resume never`
starts from the seeded initialisation and refuses a folder that has checkpoints; `--resume
PATH` continues from exactly that checkpoint (its step, data position, optimizer and schedule),
even when the run has a newer one. Also: the learning rate the optimizer really uses each step.

    .venv/bin/python -m pytest tests/training/test_trainer_resume.py
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hvdlm.cluster.distributed import World
from hvdlm.config import load_config
from hvdlm.errors import UsageError
from hvdlm.models import build_model
from hvdlm.training import checkpoint
from hvdlm.training.record.logs import read_metrics
from hvdlm.training.trainer import Callback, Trainer
from tests.conftest import TINY_RUN

WORLD = World(rank=0, size=1, local_rank=0, local_size=1, device=torch.device("cpu"))
# 4 steps, checkpoints after steps 2 and 4; warm-up over steps 0-1 to 1e-2, cosine to 1e-3.
RUN = [*TINY_RUN, "train.ckpt_interval=2", "train.warmup_steps=2", "train.lr=1e-2",
       "train.min_lr=1e-3", "train.eval_batches=1"]
LR_OF_STEP = [5e-3, 1e-2, 1e-2, 5.5e-3]  # lr * (s + 1) / 2, then 1e-3 + 4.5e-3 (1 + cos(pi s/2))


class LearningRates(Callback):
    """The learning rate of every parameter group at each micro-batch, as the optimizer has it."""

    def __init__(self) -> None:
        self.seen: list[list[float]] = []

    def on_loss(self, trainer: Trainer, loss: torch.Tensor) -> torch.Tensor:
        self.seen.append([g["lr"] for g in trainer.optimizer.param_groups])
        return loss


# A Trainer in this process installs signal handlers: pytest gets its own back after.
pytestmark = pytest.mark.usefixtures("own_signal_handlers")


def trainer(data: Path, run: Path, resume: str, *callbacks: Callback) -> Trainer:
    run.mkdir(parents=True, exist_ok=True)  # as hvdlm.train.train() does
    return Trainer(load_config(None, RUN), data, run, WORLD, resume, callbacks)


def params(state_dict: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state_dict.items()}


def assert_bitwise(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def ckpt(run: Path, step: int) -> Path:
    return checkpoint.checkpoint_dir(run) / f"step-{step:08d}.pt"


@pytest.fixture(scope="module")
def whole_run(byte_dataset, tmp_path_factory) -> tuple[Path, list[list[float]]]:
    """4 uninterrupted steps started with `--resume never`; the learning rates it used."""
    run = tmp_path_factory.mktemp("whole") / "run"
    rates = LearningRates()
    assert trainer(byte_dataset, run, "never", rates).run() == 0
    return run, rates.seen


def test_the_optimizer_uses_the_schedule_at_each_step(whole_run):
    run, seen = whole_run
    # Both groups (decay, no decay), at each of the 4 steps; then the logged values.
    assert seen == [[pytest.approx(lr, rel=1e-12)] * 2 for lr in LR_OF_STEP]
    logged = [r for r in read_metrics(run) if "lr" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert [r["lr"] for r in logged] == pytest.approx(LR_OF_STEP, rel=1e-12)


def test_never_starts_from_the_seeded_initialisation(byte_dataset, whole_run, tmp_path):
    torch.manual_seed(12345)  # whatever state torch's RNG is in, the config's seed decides
    fresh = trainer(byte_dataset, tmp_path / "run", "never")
    assert (fresh.step, fresh.consumed, fresh.resumed_from) == (0, 0, None)
    assert fresh.optimizer.state_dict()["state"] == {}
    torch.manual_seed(fresh.t.seed)  # the Trainer's initialisation, by hand
    assert_bitwise(params(fresh.model.state_dict()), build_model(fresh.cfg.model).state_dict())
    run, _ = whole_run
    assert not any("resumed_from" in r for r in read_metrics(run))


def test_never_refuses_a_folder_with_checkpoints_and_touches_nothing(byte_dataset, whole_run,
                                                                      tmp_path):
    run = tmp_path / "run"
    shutil.copytree(whole_run[0], run)
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    with pytest.raises(UsageError, match="already has checkpoints: use --resume auto"):
        trainer(byte_dataset, run, "never")
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


def test_resume_path_takes_that_checkpoint_not_the_newest(byte_dataset, whole_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(whole_run[0], run)
    saved = checkpoint.load(ckpt(run, 2))
    assert checkpoint.load_latest(run)[1].step == 4  # `auto` would take step 4
    t = trainer(byte_dataset, run, str(ckpt(run, 2)))
    assert (t.step, t.consumed, t.resumed_from) == (2, 2 * t.global_batch, 2)
    assert_bitwise(params(t.model.state_dict()), saved.model)
    assert t.optimizer.state_dict()["state"][0]["step"] == saved.optimizer["state"][0]["step"] == 2


def test_resume_path_continues_exactly_where_that_checkpoint_left_off(byte_dataset, whole_run,
                                                                       tmp_path):
    whole, _ = whole_run
    run = tmp_path / "elsewhere"  # another folder: nothing there that `auto` could find
    rates = LearningRates()
    assert trainer(byte_dataset, run, str(ckpt(whole, 2)), rates).run() == 0
    assert rates.seen == [[pytest.approx(lr, rel=1e-12)] * 2 for lr in LR_OF_STEP[2:]]
    steps = [r for r in read_metrics(run) if "loss" in r]
    assert [r["step"] for r in steps] == [3, 4] and steps[0]["resumed_from"] == 2
    # Steps 3 and 4 again from step 2's state: the uninterrupted run's, bit for bit.
    assert_bitwise(checkpoint.load(ckpt(run, 4)).model, checkpoint.load(ckpt(whole, 4)).model)
    whole_losses = {r["step"]: r["loss"] for r in read_metrics(whole) if "loss" in r}
    assert [r["loss"] for r in steps] == [whole_losses[3], whole_losses[4]]


def test_a_checkpoint_from_before_newer_model_keys_resumes(byte_dataset, whole_run, tmp_path):
    """A checkpoint written before model.kernel_size and model.dilation_growth existed (a GPT:
    they do not shape it) resumes: missing keys count as their defaults, others must match."""
    old = checkpoint.load(ckpt(whole_run[0], 2))
    for key in ("kernel_size", "dilation_growth"):
        del old.config["model"][key]
    run = tmp_path / "run"
    checkpoint.save(run, old, keep=1)
    assert trainer(byte_dataset, run, "auto").step == 2
    old.config["model"]["n_embd"] = 32  # a key that is there and differs is still refused
    checkpoint.save(tmp_path / "other", old, keep=1)
    with pytest.raises(UsageError, match="differs from the config in model.n_embd"):
        trainer(byte_dataset, tmp_path / "other", "auto")
