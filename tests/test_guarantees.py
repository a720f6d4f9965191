"""Promises the README and docs/ make that no other test checks, checked as a user reads them:

- docs/commands.md's tables: every default they state is the command's default, every flag
  they name exists, and every flag a command takes is in its table ("Every flag of these
  commands: docs/commands.md", README);
- `--max-requeues`: 100 by default, the same in hvdlm.submit, slurm/train.sbatch and
  hvdlm.cluster.requeue (README, docs/cluster.md);
- hvdlm.submit's `--time` takes sbatch's formats (docs/commands.md), as the module's own
  examples show.

    .venv/bin/python -m pytest tests/test_guarantees.py
"""
from __future__ import annotations

import argparse
import doctest
import importlib
import re

import pytest

from hvdlm.cluster import slurm_options
from hvdlm.cluster.requeue import MAX_REQUEUES
from hvdlm.commands import COMMANDS
from hvdlm.errors import UsageError
from tests.conftest import ROOT

COMMANDS_MD = (ROOT / "docs" / "commands.md").read_text()
CELL = r"(?:[^|\\]|\\.)*"  # a table cell: `\|` is a | inside it
ROW = re.compile(rf"^\| `(--[a-z0-9-]+){CELL}\|({CELL})\|", re.M)
UNITS = {"MB": 10 ** 6, "M": 10 ** 6, "MiB": 2 ** 20}
# Flags a table need not list: argparse's own, and those the table covers under another name.
UNLISTED = {"-h", "--help"}
# Defaults decided after parsing, as the table says: (command, flag) -> the parser's default.
DECIDED_LATER = {("preprocess", "--tokenizer"): None}  # bpe, unless --tokenizer-file


class Parsed(BaseException):
    """Raised by parse_args to hand the command's parser out before it does anything."""


def parser_of(command: str, monkeypatch) -> argparse.ArgumentParser:
    def grab(self, *args, **kwargs):
        raise Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", grab)
    main = importlib.import_module(COMMANDS[command].module).main
    with pytest.raises(Parsed) as got:
        main(["--help"])
    return got.value.args[0]


def section(command: str) -> str:
    match = re.search(rf"^## {command}\n(.*?)(?=^## )", COMMANDS_MD, re.M | re.S)
    assert match, f"docs/commands.md has no section ## {command}"
    return match.group(1)


def documented_default(text: str):
    """What a table's default cell means, or ... where it is words for people."""
    text = text.strip().strip("`")
    if text == "":
        return ...  # no default stated
    if text == "none":
        return None
    if text == "off":
        return False
    if text == "required":
        return "required"
    number = re.fullmatch(r"([0-9.e]+) ?(MB|M|MiB)?", text)
    if number:
        value = float(number.group(1)) * UNITS.get(number.group(2), 1)
        return value
    if re.fullmatch(r"[a-z][a-z0-9_/%.-]*", text) and text not in ("all", "found"):
        return text
    return ...


def documented(command: str) -> dict[str, object]:
    return {m.group(1): documented_default(m.group(2)) for m in ROW.finditer(section(command))}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_documented_defaults_are_the_commands(command, monkeypatch):
    parser = parser_of(command, monkeypatch)
    actions = {flag: a for a in parser._actions for flag in a.option_strings}
    checked = 0
    for flag, default in documented(command).items():
        assert flag in actions, f"docs/commands.md names {command} {flag}; the command has none"
        action = actions[flag]
        if default is ... or (command, flag) in DECIDED_LATER:
            assert action.default == DECIDED_LATER.get((command, flag), action.default)
            continue
        if default == "required":
            assert action.required, f"{command} {flag}: documented as required"
        elif isinstance(default, float):
            assert float(action.default) == default, f"{command} {flag}: {action.default}"
        elif default is None:  # nothing, off, or a repeatable flag's empty list
            assert action.default in (None, False, [], ()) and not action.required, \
                f"{command} {flag}: documented without a default, is {action.default!r}"
        else:
            assert action.default == default and not action.required, \
                f"{command} {flag}: documented {default!r}, is {action.default!r}"
        checked += 1
    assert checked or command == "verify"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_a_command_takes_is_documented(command, monkeypatch):
    parser = parser_of(command, monkeypatch)
    text = section(command)
    missing = [flag for a in parser._actions if a.help != argparse.SUPPRESS
               for flag in a.option_strings
               if flag not in UNLISTED and not re.search(rf"`{re.escape(flag)}\b", text)]
    assert not missing, f"docs/commands.md's {command} section lacks {missing}"


def test_max_requeues_is_100_everywhere(monkeypatch):
    assert MAX_REQUEUES == 100
    submit = {f: a for a in parser_of("submit", monkeypatch)._actions for f in a.option_strings}
    assert submit["--max-requeues"].default == MAX_REQUEUES
    sbatch = (ROOT / "slurm" / "train.sbatch").read_text()
    assert "--max-requeues N  requeue after at most N stops (default 100" in sbatch
    assert "--max-requeues" in sbatch and "hvdlm.cluster.requeue" in sbatch


def test_slurm_options_examples_hold():
    result = doctest.testmod(slurm_options, raise_on_error=False, verbose=False)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize("text, minutes", [
    ("60", 60), ("90:30", 91), ("2:00:00", 120), ("0:0:59", 1), ("0:30", 1), ("1-0", 1440),
    ("1-2", 1560), ("1-12:30", 2190), ("1-00:00:01", 1441), (45, 45), (" 5 ", 5)])
def test_time_limits_in_every_sbatch_format(text, minutes):
    assert slurm_options.slurm_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "0", "0:0", "1:2:3:4", "-5", "1-", "1h", "1-2:3:4:5"])
def test_bad_time_limits_are_refused(text):
    with pytest.raises(UsageError, match="--time"):
        slurm_options.slurm_minutes(text)


def test_a_bad_time_limit_names_the_formats():
    with pytest.raises(UsageError) as err:
        slurm_options.slurm_minutes("1h")
    assert str(err.value) == ("--time '1h': use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
                              "D-HH:MM:SS (sbatch's formats)")


def test_sbatch_options_pass_through_and_refuse_hvdlms_own():
    assert slurm_options.sbatch_options(["--mem=64G", "exclusive", "cpus-per-gpu=8", "a=b=c",
                                         "Xfoo=1"]) \
        == {"mem": "64G", "exclusive": True, "cpus_per_gpu": "8", "a": "b=c", "Xfoo": "1"}
    with pytest.raises(UsageError, match=r"^--slurm nodes: use --nodes$"):
        slurm_options.sbatch_options(["nodes=2"])
    with pytest.raises(UsageError, match=r"^--slurm job-name: hvdlm.submit sets this one itself$"):
        slurm_options.sbatch_options(["job-name=x"])
    for bad in ("=x", "9mem=1", "me m=1", ""):
        with pytest.raises(UsageError, match="expected KEY=VALUE or KEY"):
            slurm_options.sbatch_options([bad])
