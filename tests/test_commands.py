"""The one list of commands (hvdlm/commands.py) and what is made from it: setup.py's console
scripts, the `hvdlm COMMAND ...` dispatcher, the README's list."""
from __future__ import annotations

import ast
import importlib
import runpy

import pytest
import setuptools

from hvdlm import commands
from tests.conftest import ROOT, run_module


def test_the_list_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "hvdlm" / "commands.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "typing"}


def test_each_listed_module_has_main():
    for command in commands.COMMANDS.values():
        assert callable(importlib.import_module(command.module).main), command.module


def test_setup_py_installs_a_script_for_each_command(monkeypatch):
    given = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: given.update(kwargs))
    runpy.run_path(str(ROOT / "setup.py"))
    scripts = given["entry_points"]["console_scripts"]
    assert scripts == commands.console_scripts()
    assert [s.split("=")[0] for s in scripts] == ["hvdlm", *(f"hvdlm-{n}" for n in
                                                           commands.COMMANDS)]
    assert "hvdlm-explain=hvdlm.explain.command:main" in scripts


def test_readme_shows_the_list_between_its_markers():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- commands:start -->\n", "<!-- commands:end -->"
    assert readme.count(start) == 1 and readme.count(end) == 1
    assert readme.split(start)[1].split(end)[0] == commands.markdown()
    for name, command in commands.COMMANDS.items():
        assert f"{name}  " in commands.markdown() and command.summary in commands.markdown()


@pytest.mark.parametrize("args", [[], ["--help"]])
def test_hvdlm_alone_lists_the_commands(args):
    proc = run_module("hvdlm", *args)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: hvdlm [--version] COMMAND [ARGS...]")
    assert commands.listing("  ") in proc.stdout


def test_hvdlm_command_runs_that_command_with_the_rest_of_the_line(byte_dataset, tmp_path):
    for target in (byte_dataset, tmp_path / "missing"):
        through = run_module("hvdlm", "verify", target)
        direct = run_module("hvdlm.verify", target)
        assert (through.returncode, through.stdout, through.stderr) == \
               (direct.returncode, direct.stdout, direct.stderr)
    assert through.returncode == 1 and "missing/manifest.json" in through.stderr
    assert direct.stdout == "" and run_module("hvdlm", "verify", byte_dataset).returncode == 0
    helped = run_module("hvdlm", "train", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: hvdlm.train")


@pytest.mark.parametrize("args, shown", [
    (["nosuch"], "'nosuch' is not an hvdlm command (hvdlm --help lists them)"),
    (["Train", "--data", "d"], "'Train' is not an hvdlm command"),
    (["--nosuch"], "unrecognized arguments: --nosuch"),
])
def test_an_unknown_command_is_one_line_exit_2(args, shown):
    proc = run_module("hvdlm", *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("hvdlm: error: ") and proc.stderr.count("\n") == 1
    assert shown in proc.stderr


def test_version():
    proc = run_module("hvdlm", "--version")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[0].startswith("hvdlm ")
    assert lines[1].startswith("torch ") and lines[2].startswith("horovod ")
