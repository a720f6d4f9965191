"""Fault injection for hvdlm's own tests: a trainer callback, off unless asked for.

    HVDLM_FAULT_NONFINITE="RANK:STEP,..."   that rank's loss is NaN at that step
    HVDLM_FAULT_KILL="RANK:STEP"            that rank kills itself with SIGKILL before that step
    HVDLM_FAULT_PAUSE="RANK:STEP"           that rank waits after STEP steps until it is asked
                                            to stop (SIGUSR1/SIGTERM); the others wait for it

hvdlm.train loads this module only when an HVDLM_FAULT_* variable is set, and it reads them
once, when the run starts; an unknown HVDLM_FAULT_* name is refused (a typo must not pass for
"no fault"), and all empty add no callback. Real faults, placed exactly: a test can then check
what a user would see after them. The pause replaces a race: a test that signals a run once
step STEP is logged knows the run is still there, and that all ranks stop after step STEP + 1
(with train.log_interval=1; else one step later, as the stop flag is then read one step late).
"""
from __future__ import annotations

import os
import signal
import time
from typing import Mapping

import torch

from hvdlm.errors import UsageError
from hvdlm.training.record.logs import log
from hvdlm.training.trainer import Callback, Trainer

PAUSE_POLL_S = 0.05
VARIABLES = ("HVDLM_FAULT_NONFINITE", "HVDLM_FAULT_KILL", "HVDLM_FAULT_PAUSE")


def _spec(env: Mapping[str, str], name: str) -> set[tuple[int, int]]:
    try:
        return {(int(rank), int(step)) for rank, step in
                (item.split(":") for item in env.get(name, "").split(",") if item.strip())}
    except ValueError:
        raise UsageError(f"{name} must be RANK:STEP,... (got {env[name]!r})") from None


class InjectedFaults(Callback):
    def __init__(self, nonfinite: set[tuple[int, int]], kill: set[tuple[int, int]],
                 pause: set[tuple[int, int]] = frozenset()):
        self.nonfinite, self.kill, self.pause = nonfinite, kill, pause

    def on_step_start(self, trainer: Trainer) -> None:
        here = (trainer.world.rank, trainer.step)
        if here in self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if here in self.pause:
            wait_for_stop_request(trainer)

    def on_loss(self, trainer: Trainer, loss: torch.Tensor) -> torch.Tensor:
        if (trainer.world.rank, trainer.step) in self.nonfinite:
            return loss * float("nan")
        return loss


def wait_for_stop_request(trainer: Trainer) -> None:
    """Block until this rank's SIGUSR1/SIGTERM handler has run (the handler runs in this, the
    main, thread between sleeps; Horovod's own thread goes on)."""
    log.warning("fault injected: rank %d paused after step %d until asked to stop",
                trainer.world.rank, trainer.step)
    while trainer.stop.signal is None:
        time.sleep(PAUSE_POLL_S)


def from_environ(env: Mapping[str, str] = os.environ) -> list[Callback]:
    """The faults the environment asks for, as callbacks (none if it asks for none)."""
    unknown = sorted(n for n in env if n.startswith("HVDLM_FAULT_") and n not in VARIABLES)
    if unknown:
        raise UsageError(f"unknown fault variable {unknown[0]} (known: {', '.join(VARIABLES)})")
    nonfinite, kill, pause = (_spec(env, name) for name in VARIABLES)
    return [InjectedFaults(nonfinite, kill, pause)] if nonfinite or kill or pause else []
