"""Every `python -m hvdlm.<command> --help` works and exits 0."""
import importlib.util

import pytest

from tests.conftest import run_module

COMMANDS = ["preprocess", "verify", "train", "evaluate", "generate", "export", "explain", "audit",
            "launch", "submit"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command):
    if importlib.util.find_spec(f"hvdlm.{command}") is None:
        pytest.fail(f"hvdlm.{command} does not exist")
    proc = run_module(f"hvdlm.{command}", "--help", timeout=60, fresh=True)  # imports too
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
