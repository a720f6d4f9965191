"""Every `python -m hvdlm.<command> --help` works, exits 0 and names each option's default
(the commands of hvdlm/commands.py)."""
import argparse
import importlib
import importlib.util

import pytest

from hvdlm import cli
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


class _Parsed(Exception):
    """Raised in place of parsing: the test has the command's parser."""


def command_parser(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser `command`'s main builds, caught when it starts parsing."""
    def capture(self, *args, **kwargs):
        raise _Parsed(self)
    monkeypatch.setattr(cli.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parsed) as caught:
        importlib.import_module(COMMANDS[command].module).main(["--help"])
    return caught.value.args[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_names_every_default(command, monkeypatch):
    parser = command_parser(command, monkeypatch)
    defaults = [a for a in parser._actions if a.default not in (None, False, [], argparse.SUPPRESS)
                and not isinstance(a, argparse._HelpAction)
                and (a.option_strings or a.nargs in ("?", "*"))]
    for action in defaults:
        shown = " ".join(parser._get_formatter()._format_action(action).split())
        assert "default" in shown.lower(), (command, shown)
        if "default" not in (action.help or "").lower():  # added by the formatter: the value
            assert f"default: {action.default}" in shown, (command, shown)


def test_generate_help_shows_its_sampling_defaults():
    shown = " ".join(run_module("hvdlm.generate", "--help", timeout=60).stdout.split())
    for text in ("--temperature TEMPERATURE 0 = greedy (default: 0.8)", "(default: 50)",
                 "--max-new-tokens MAX_NEW_TOKENS default: 200"):
        assert text in shown
