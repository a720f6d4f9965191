"""The CI rule (tests/ci_rule.py) on a synthetic test folder, run by a real pytest subprocess:
under CI=true a required test that is skipped (at run time or while collected) or deselected
fails the run; without CI the same runs pass, and a skip of a test nothing requires is fine."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

REQUIRED = textwrap.dedent("""
    import pytest

    @pytest.mark.slurm
    def test_needs_slurm():
        pass

    def test_plain():
        pass
""")
MODULE_SKIPS = {
    "skip": 'import pytest\npytest.skip("no cluster here", allow_module_level=True)\n',
    "importorskip": 'import pytest\npytest.importorskip("no_such_module_hvdlm")\n',
}


def pytest_run(folder: Path, *args: str, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.ci_rule",
                           "-p", "no:cacheprovider", "-q", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def folder_with(tmp_path: Path, **modules: str) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -ra --strict-markers\n")
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
    return tmp_path


def test_every_required_test_run_passes_in_ci(tmp_path):
    proc = pytest_run(folder_with(tmp_path, test_required=REQUIRED), ci=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


@pytest.mark.parametrize("how", ["call", "skipif"])
def test_run_time_skip_of_a_required_test_fails_in_ci(tmp_path, how):
    skipped = {"call": REQUIRED.replace("pass", 'pytest.skip("slurmctld is down")', 1),
               "skipif": REQUIRED.replace("@pytest.mark.slurm\n", "@pytest.mark.slurm\n@pytest"
                                          ".mark.skipif(True, reason='slurmctld is down')\n")}
    folder = folder_with(tmp_path, test_required=skipped[how])
    proc = pytest_run(folder, ci=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "required part (slurm) skipped in CI: " in proc.stdout
    # a skip at call time fails the test; a skipif (at setup) makes it an error
    assert "slurmctld is down" in proc.stdout and "1 passed" in proc.stdout
    proc = pytest_run(folder, ci=False)
    assert proc.returncode == 0 and "1 passed, 1 skipped" in proc.stdout, proc.stdout


def test_skip_of_a_test_nothing_requires_is_fine_in_ci(tmp_path):
    folder = folder_with(tmp_path, test_required=REQUIRED.replace(
        "def test_plain():\n    pass", "def test_plain():\n    pytest.skip('optional')"))
    proc = pytest_run(folder, ci=True)
    assert proc.returncode == 0 and "1 passed, 1 skipped" in proc.stdout, proc.stdout


@pytest.mark.parametrize("how", sorted(MODULE_SKIPS))
def test_module_skipped_while_collected_fails_in_ci(tmp_path, how):
    folder = folder_with(tmp_path, test_required=REQUIRED,
                         test_skipped=MODULE_SKIPS[how] + REQUIRED)
    proc = pytest_run(folder, ci=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # a collection error
    assert "test_skipped.py skipped while collected in CI" in proc.stdout, proc.stdout
    assert ("no cluster here" if how == "skip" else "no_such_module_hvdlm") in proc.stdout
    proc = pytest_run(folder, ci=False)
    assert proc.returncode == 0 and "2 passed, 1 skipped" in proc.stdout, proc.stdout


@pytest.mark.parametrize("args", [["-m", "not slurm"], ["-k", "plain"],
                                  ["--deselect", "test_required.py::test_needs_slurm"]],
                         ids=["-m", "-k", "--deselect"])
def test_deselecting_a_required_test_fails_in_ci(tmp_path, args):
    folder = folder_with(tmp_path, test_required=REQUIRED)
    proc = pytest_run(folder, *args, ci=True)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # a usage error, before any test ran
    assert ("CI=true: 1 required test(s) deselected (-m, -k or --deselect): "
            "test_required.py::test_needs_slurm [slurm]") in proc.stderr, proc.stderr
    assert "passed" not in proc.stdout
    proc = pytest_run(folder, *args, ci=False)
    assert proc.returncode == 0 and "1 passed, 1 deselected" in proc.stdout, proc.stdout


def test_deselecting_only_tests_nothing_requires_is_fine_in_ci(tmp_path):
    proc = pytest_run(folder_with(tmp_path, test_required=REQUIRED), "-k", "not plain", ci=True)
    assert proc.returncode == 0 and "1 passed, 1 deselected" in proc.stdout, proc.stdout


def test_ignoring_paths_fails_in_ci(tmp_path):
    folder = folder_with(tmp_path, test_required=REQUIRED)
    proc = pytest_run(folder, "--ignore", "test_required.py", ci=True)
    assert proc.returncode == 4 and "CI=true: --ignore may leave out required tests" \
        in proc.stderr, proc.stdout + proc.stderr
