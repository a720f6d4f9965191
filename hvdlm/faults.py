"""Fault injection for hvdlm's own tests, driven by environment variables (off by default).

    HVDLM_FAULT_NONFINITE="RANK:STEP,..."   that rank's loss is NaN at that step
    HVDLM_FAULT_KILL="RANK:STEP"            that rank kills itself with SIGKILL before that step

Real faults, placed exactly: a test can then check what a user would see after them.
"""
from __future__ import annotations

import math
import os
import signal


def _spec(name: str) -> set[tuple[int, int]]:
    text = os.environ.get(name, "")
    return {tuple(int(v) for v in item.split(":")) for item in text.split(",") if item.strip()}


def loss_scale(rank: int, step: int) -> float:
    return math.nan if (rank, step) in _spec("HVDLM_FAULT_NONFINITE") else 1.0


def maybe_kill(rank: int, step: int) -> None:
    if (rank, step) in _spec("HVDLM_FAULT_KILL"):
        os.kill(os.getpid(), signal.SIGKILL)
