"""Fault injection for hvdlm's own tests: a trainer callback, off unless asked for.

    HVDLM_FAULT_NONFINITE="RANK:STEP,..."   that rank's loss is NaN at that step
    HVDLM_FAULT_KILL="RANK:STEP"            that rank kills itself with SIGKILL before that step

The variables are read once, when the run starts. Real faults, placed exactly: a test can then
check what a user would see after them.
"""
from __future__ import annotations

import os
import signal
from typing import Mapping

import torch

from hvdlm.errors import UsageError
from hvdlm.training.trainer import Callback, Trainer


def _spec(env: Mapping[str, str], name: str) -> set[tuple[int, int]]:
    try:
        return {(int(rank), int(step)) for rank, step in
                (item.split(":") for item in env.get(name, "").split(",") if item.strip())}
    except ValueError:
        raise UsageError(f"{name} must be RANK:STEP,... (got {env[name]!r})") from None


class InjectedFaults(Callback):
    def __init__(self, nonfinite: set[tuple[int, int]], kill: set[tuple[int, int]]):
        self.nonfinite, self.kill = nonfinite, kill

    def on_step_start(self, trainer: Trainer) -> None:
        if (trainer.world.rank, trainer.step) in self.kill:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_loss(self, trainer: Trainer, loss: torch.Tensor) -> torch.Tensor:
        if (trainer.world.rank, trainer.step) in self.nonfinite:
            return loss * float("nan")
        return loss


def from_environ(env: Mapping[str, str] = os.environ) -> list[Callback]:
    """The faults the environment asks for, as callbacks (none if it asks for none)."""
    nonfinite, kill = _spec(env, "HVDLM_FAULT_NONFINITE"), _spec(env, "HVDLM_FAULT_KILL")
    return [InjectedFaults(nonfinite, kill)] if nonfinite or kill else []
