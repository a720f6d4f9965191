"""The import rules, on the real tree (hvdlm/ and benchmarks/), and on small synthetic trees
that break one rule each, to prove each check reports the file and the import.

    models/          neither horovod nor torch.distributed
    horovod.torch    only hvdlm/cluster/distributed.py
    horovod.runner, submitit, subprocess    only hvdlm/cluster/ (the launch/submit shims: only
                     hvdlm.cluster)
    commands         (listed in hvdlm/commands.py, and hvdlm.__main__, the dispatcher)
                     imported by no library or benchmark module
    no import cycles; no .py file over 400 lines in hvdlm/, benchmarks/, tests/, scripts/

The checks themselves are tests/import_rules.py.

    .venv/bin/python -m pytest tests/test_architecture.py
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests import import_rules as rules
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def graph() -> rules.Graph:
    return rules.build_graph(ROOT)


def test_the_tree_is_read(graph):
    assert {"hvdlm", "hvdlm.models.gpt", "hvdlm.cluster.distributed", "hvdlm.cluster.launch",
            "benchmarks.report"} <= set(graph.modules)
    assert rules.COMMANDS <= set(graph.modules)  # every command exists where the rules say


@pytest.mark.parametrize("check", rules.CHECKS, ids=lambda c: c.__name__)
def test_real_tree(graph, check):
    violations = check(graph)
    assert not violations, "\n".join(violations)


def test_no_long_files():
    violations = rules.long_files(ROOT)
    assert not violations, "\n".join(violations)


# -- the checker on synthetic trees --------------------------------------------------------------

CLEAN = {
    "hvdlm/__init__.py": "",
    "hvdlm/cli.py": "import sys\n",
    "hvdlm/models/__init__.py": "from hvdlm.models.gpt import GPT\n",
    "hvdlm/models/gpt.py": "import torch\nfrom torch import nn\nfrom hvdlm.config import X\n",
    "hvdlm/config.py": "import dataclasses\n",
    "hvdlm/training/__init__.py": "",
    "hvdlm/cluster/distributed.py": "import horovod.torch as hvd\n",
    "hvdlm/training/trainer.py": ("from hvdlm.cluster import distributed\n"
                                  "from hvdlm import models\n"),
    "hvdlm/cluster/__init__.py": "",
    "hvdlm/cluster/launch.py": ("import subprocess\nfrom horovod.runner.http import http_server\n"
                                "from .hostlist import parse_hosts\n"),
    "hvdlm/cluster/hostlist.py": "import re\n",
    "hvdlm/cluster/submit.py": "import submitit\nfrom . import launch\n",
    "hvdlm/train.py": "from hvdlm.training.trainer import train\n",
    "hvdlm/launch.py": "import sys\nfrom hvdlm.cluster.launch import main\n",
    "hvdlm/submit.py": "import sys\nfrom hvdlm.cluster import submit\n",
    "benchmarks/__init__.py": "",
    "benchmarks/scaling.py": ("import subprocess\nfrom benchmarks import report\n"
                              "import horovod.torch\n"),
    "benchmarks/report.py": "from hvdlm.training.trainer import train\n",
}


def tree(tmp_path: Path, **changes: str) -> Path:
    """CLEAN with `changes` (path with / written as __, .py dropped) added or replaced."""
    files = {**CLEAN, **{k.replace("__", "/") + ".py": v for k, v in changes.items()}}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(text))
    return tmp_path


def violations(root: Path) -> list[str]:
    return rules.all_violations(root)


def test_clean_tree_passes(tmp_path):
    assert violations(tree(tmp_path)) == []


def test_relative_imports_and_submodules_resolve(tmp_path):
    g = rules.build_graph(tree(tmp_path))
    names = {i.name for i in g.modules["hvdlm.cluster.launch"].imports}
    assert "hvdlm.cluster.hostlist.parse_hosts" in names
    assert g.resolve("hvdlm.cluster.hostlist.parse_hosts") == "hvdlm.cluster.hostlist"
    assert g.resolve("hvdlm.cluster.distributed") == "hvdlm.cluster.distributed"
    assert g.resolve("hvdlm.models.GPT") == "hvdlm.models"  # a name, not a submodule
    assert g.resolve("torch.nn") is None
    submit = {i.name for i in g.modules["hvdlm.cluster.submit"].imports}
    assert "hvdlm.cluster.launch" in submit


@pytest.mark.parametrize("source, shown", [
    ("import horovod.torch as hvd\n", "imports horovod.torch"),
    ("def f():\n    import torch.distributed as dist\n", "imports torch.distributed"),
    ("from torch import distributed\n", "imports torch.distributed"),
    ("from horovod.runner.common.util import hosts\n", "imports horovod.runner.common.util.hosts"),
    ("try:\n    from torch.distributed import all_reduce\nexcept ImportError:\n    pass\n",
     "imports torch.distributed.all_reduce"),
])
def test_models_importing_distributed_code_is_reported(tmp_path, source, shown):
    found = rules.models_stay_local(rules.build_graph(tree(tmp_path, hvdlm__models__rnn=source)))
    assert len(found) == 1 and found[0].startswith("hvdlm/models/rnn.py:") and shown in found[0]


HOROVOD_TORCH_CASES = [
    ("hvdlm__training__trainer", "import horovod.torch as hvd\n", "imports horovod.torch"),
    ("hvdlm__cluster__launch", "from horovod.torch import allreduce\n",
     "imports horovod.torch.allreduce"),
    ("hvdlm__text__shards", "def f():\n    import horovod\n", "imports horovod"),
    ("hvdlm__config", "from horovod import torch\n", "imports horovod.torch"),
]
PROCESS_TOOL_CASES = [
    ("hvdlm__training__trainer", "import subprocess\n", "imports subprocess"),
    ("hvdlm__text__workers", "from subprocess import run\n", "imports subprocess.run"),
    ("hvdlm__train", "def f():\n    import submitit\n", "imports submitit"),
    ("hvdlm__training__distributed", "from horovod.runner import run\n",
     "imports horovod.runner.run"),
    ("hvdlm__launch", "import sys\nfrom hvdlm.cli import run\n", "imports hvdlm.cli.run"),
    ("hvdlm__submit", "import torch\nfrom hvdlm.cluster.submit import main\n", "imports torch"),
]


@pytest.mark.parametrize("rule, where, source, shown", [
    *[(rules.horovod_torch_only_in_distributed, *case) for case in HOROVOD_TORCH_CASES],
    *[(rules.process_tools_only_in_cluster, *case) for case in PROCESS_TOOL_CASES],
])
def test_imports_outside_their_part_are_reported(tmp_path, rule, where, source, shown):
    found = rule(rules.build_graph(tree(tmp_path, **{where: source})))
    assert len(found) == 1, found
    assert found[0].startswith(where.replace("__", "/") + ".py:") and shown in found[0]


def test_benchmarks_may_use_processes_and_horovod(tmp_path):
    g = rules.build_graph(tree(tmp_path))
    assert "subprocess" in {i.name for i in g.modules["benchmarks.scaling"].imports}
    assert not rules.process_tools_only_in_cluster(g)
    assert not rules.horovod_torch_only_in_distributed(g)


@pytest.mark.parametrize("where, source, shown", [
    ("hvdlm__training__trainer", "from hvdlm import train\n", "imports hvdlm.train"),
    ("hvdlm__cluster__submit", "def f():\n    from hvdlm.train import main\n",
     "imports hvdlm.train.main"),
    ("benchmarks__report", "import hvdlm.evaluate\n", "imports hvdlm.evaluate"),
    ("hvdlm__text__pipeline", "from .. import preprocess\n", "imports hvdlm.preprocess"),
])
def test_command_imported_by_a_library_module_is_reported(tmp_path, where, source, shown):
    changes = {where: source, "hvdlm__evaluate": "", "hvdlm__preprocess": ""}
    found = rules.no_command_imports(rules.build_graph(tree(tmp_path, **changes)))
    assert len(found) == 1, found
    assert found[0].startswith(where.replace("__", "/") + ".py:") and shown in found[0]


def test_commands_may_import_commands_and_training_is_not_train(tmp_path):
    g = rules.build_graph(tree(tmp_path, hvdlm__evaluate="from hvdlm import train\n",
                               hvdlm__text__x="import hvdlm.training.trainer\n"))
    assert rules.no_command_imports(g) == []


@pytest.mark.parametrize("changes, members", [
    ({"hvdlm__config": "from hvdlm.models.gpt import GPT\n"},
     ["hvdlm.config", "hvdlm.models.gpt"]),
    ({"hvdlm__cluster__hostlist": "def f():\n    from . import submit\n"},
     ["hvdlm.cluster.hostlist", "hvdlm.cluster.launch", "hvdlm.cluster.submit"]),
    ({"benchmarks__report": "from benchmarks.scaling import x\n"},
     ["benchmarks.report", "benchmarks.scaling"]),
    ({"hvdlm__cli": "import hvdlm.cli\n"}, ["hvdlm.cli"]),
    ({"hvdlm__cluster__distributed": "from hvdlm.training.trainer import train\n"},
     ["hvdlm.cluster.distributed", "hvdlm.training.trainer"]),
])
def test_import_cycles_are_reported_with_their_files(tmp_path, changes, members):
    found = rules.import_cycles(rules.build_graph(tree(tmp_path, **changes)))
    assert len(found) == 1, found
    for name in members:
        assert name in found[0]
        assert f"{name.replace('.', '/')}" in found[0]  # each hop names its file and line
    cycle = found[0].split(":")[0].removeprefix("import cycle ").split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == set(members)


def test_long_files_are_reported(tmp_path):
    root = tree(tmp_path)
    (root / "tests").mkdir()
    (root / "tests" / "test_x.py").write_text("x = 1\n" * 401)
    (root / "scripts").mkdir()
    (root / "scripts" / "ok.py").write_text("x = 1\n" * 400)
    assert rules.long_files(root) == ["tests/test_x.py has 401 lines (limit 400)"]


def test_no_rank_sends_pickles():
    """Nothing another rank sent is unpickled: no *_object collective (allgather_object,
    broadcast_object, ...) anywhere in hvdlm; per-rank data travels as tensors."""
    calls = []
    for path in sorted((ROOT / "hvdlm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "attr", None) or getattr(node, "id", None) or ""
            if name.endswith("_object") and ("gather" in name or "broadcast" in name):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert calls == []
