"""Every `python -m hvdlm.<command> --help` works and exits 0 (the commands of
hvdlm/commands.py)."""
import importlib.util

import pytest

from hvdlm.commands import COMMANDS, runnable
from tests.conftest import run_module


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help(command):
    if importlib.util.find_spec(runnable(command)) is None:
        pytest.fail(f"{runnable(command)} does not exist")
    proc = run_module(runnable(command), "--help", timeout=60, fresh=True)  # imports too
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


REQUIRED = {"train": ["--data", "d", "--out", "o"], "evaluate": ["--run", "r", "--data", "d"],
            "generate": ["--run", "r", "--prompt", "p"], "verify": ["d"], "preprocess": ["x", "--out", "o"]}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_unknown_option_is_one_line(command):
    proc = run_module(f"hvdlm.{command}", *REQUIRED[command], "--no-such-option", timeout=60)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--no-such-option" in proc.stderr
