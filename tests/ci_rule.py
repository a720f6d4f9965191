"""The CI rule, as a pytest plugin: under CI=true every test of a required part runs.

A required part is one a laptop may lack (Horovod, a local Slurm, root for network namespaces
or a second Unix user); its tests carry a marker from REQUIRED_MARKERS and skip, with the
reason, where it is missing. With CI=true (as .ci/run sets) the run fails instead when:

- such a test skips at run time (the test fails, naming the part and the reason);
- a test module or folder skips while it is collected (`pytest.skip(allow_module_level=True)`,
  a module-level importorskip): its tests and their markers are unknown, so it counts as
  required and is a collection error;
- required tests are deselected (`-m`, `-k`, `--deselect`), or paths left out with
  `--ignore`/`--ignore-glob`: a usage error naming them.

Outside CI all of these stay as pytest has them, so `pytest -m "not slurm"` works on a laptop.
tests/conftest.py loads it; tests/test_ci_rule.py runs it on a synthetic test folder.
"""
from __future__ import annotations

import os

import pytest

REQUIRED_MARKERS = {
    "horovod": "runs real Horovod ranks (required in CI)",
    "slurm": "needs the local Slurm cluster, started as root by the test setup (required in CI)",
    "netns": "emulated hosts in network namespaces, needs root (required in CI)",
    "security": "attacks from a real second Unix user, needs root (required in CI)",
    "root": "real full disks (a small tmpfs mounted as root) (required in CI)",
    "browser": "renders pages in Debian's headless Chromium, which the test setup installs as "
               "root (scripts/install-chromium.sh) (required in CI)",
}
SHOWN = 10  # deselected tests named in the message; the rest are counted
_DESELECTED = pytest.StashKey[list]()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def required_markers(item: pytest.Item) -> list[str]:
    return [m for m in REQUIRED_MARKERS if item.get_closest_marker(m)]


def _reason(report) -> str:
    return report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in REQUIRED_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")
    config.stash[_DESELECTED] = []
    if in_ci():
        left_out = [*(config.getoption("ignore") or []), *(config.getoption("ignore_glob") or [])]
        if left_out:
            raise pytest.UsageError(f"CI=true: --ignore may leave out required tests "
                                    f"({', '.join(map(str, left_out))}); in CI every test runs")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        required = required_markers(item)
        if required:
            report.outcome = "failed"
            report.longrepr = f"required part ({', '.join(required)}) skipped in CI: " \
                f"{_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped:
        report.outcome = "failed"
        report.longrepr = (f"{collector.nodeid or collector.path} skipped while collected in CI "
                           f"(its tests' markers are unknown: they count as required): "
                           f"{_reason(report)}")


def pytest_deselected(items) -> None:
    if items:
        items[0].config.stash[_DESELECTED].extend(i for i in items if required_markers(i))


def pytest_collection_finish(session: pytest.Session) -> None:
    required = session.config.stash[_DESELECTED]
    if in_ci() and required:
        named = [f"{i.nodeid} [{', '.join(required_markers(i))}]" for i in required[:SHOWN]]
        more = f" and {len(required) - SHOWN} more" if len(required) > SHOWN else ""
        raise pytest.UsageError(f"CI=true: {len(required)} required test(s) deselected "
                                f"(-m, -k or --deselect): {'; '.join(named)}{more}. In CI every "
                                f"required test runs; unset CI to run a subset")
