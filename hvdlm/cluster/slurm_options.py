"""Slurm's own spellings for hvdlm.submit: time limits and pass-through sbatch options.

    >>> slurm_minutes("1-12:30")          # D-HH:MM
    2190
    >>> sbatch_options(["constraint=a100", "exclusive", "mem=64G"])
    {'constraint': 'a100', 'exclusive': True, 'mem': '64G'}
"""
from __future__ import annotations

import math
import re
from typing import Iterable

from hvdlm.errors import UsageError

# sbatch's --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<rest>\d+(?::\d+){0,2})")

# Options hvdlm.submit sets itself: each has its own flag, or submitit needs its value.
OWN_OPTIONS = {"nodes": "--nodes", "ntasks_per_node": "--ntasks-per-node",
               "gpus_per_node": "--gpus-per-node", "cpus_per_task": "--cpus-per-task",
               "time": "--time", "partition": "--partition", "job_name": None, "output": None,
               "error": None, "signal": None, "open_mode": None, "array": None}
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def slurm_minutes(value: str | int) -> int:
    """A time limit in any of sbatch's formats as whole minutes (seconds round up)."""
    text = str(value).strip()
    m = _TIME.fullmatch(text)
    if not m:
        raise UsageError(f"--time {text!r}: use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
                         "D-HH:MM:SS (sbatch's formats)")
    parts = [int(p) for p in m.group("rest").split(":")]
    if m.group("days") is not None:
        hours, minutes, seconds = (parts + [0, 0])[:3]
        hours += 24 * int(m.group("days"))
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    total = math.ceil((hours * 3600 + minutes * 60 + seconds) / 60)
    if total < 1:
        raise UsageError(f"--time {text!r} must be at least one minute")
    return total


def sbatch_options(items: Iterable[str]) -> dict[str, str | bool]:
    """`--slurm KEY=VALUE` (or a bare `KEY` for a flag such as exclusive) as submitit's
    slurm_additional_parameters; refuses what hvdlm.submit sets itself."""
    options: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not _KEY.fullmatch(key):
            raise UsageError(f"--slurm {item!r}: expected KEY=VALUE or KEY, e.g. mem=64G")
        name = key.replace("-", "_")
        if name in OWN_OPTIONS:
            own = OWN_OPTIONS[name]
            raise UsageError(f"--slurm {key}: " + (f"use {own}" if own else
                                                   "hvdlm.submit sets this one itself"))
        options[name] = value if sep else True
    return options
