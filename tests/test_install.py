"""`make install PYTHON=...` into an existing environment that is not .venv.

The environment stands for a cluster module or a conda environment that already has torch and
the usual packages: a fresh virtual environment that sees this checkout's site-packages through
a .pth file, minus Horovod and hvdlm. make install must then put the patched Horovod (the cached
wheel) and hvdlm into it, with working console scripts: one for each command of
hvdlm/commands.py, and `hvdlm` that runs them.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from hvdlm.commands import COMMANDS
from tests.conftest import ROOT

NOT_SHARED = ("horovod", "hvdlm", "__editable__", "_hvdlm", "easy-install.pth", "distutils-")


def existing_environment(dest: Path) -> Path:
    """A venv at `dest` that sees this interpreter's packages except Horovod and hvdlm."""
    subprocess.run([sys.executable, "-m", "venv", dest], check=True, timeout=120)
    python = dest / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], capture_output=True, text=True,
                               check=True).stdout.strip())
    shared = dest.parent / "module-packages"
    shared.mkdir()
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if not entry.name.lower().startswith(NOT_SHARED) and not entry.name.endswith(".pth"):
            (shared / entry.name).symlink_to(entry)
    (site / "a-module.pth").write_text(f"{shared}\n")
    return python


def test_make_install_into_an_existing_environment(tmp_path):
    python = existing_environment(tmp_path / "env")
    src = tmp_path / "src"  # a copy: pip's in-tree build must not touch the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "tests", "docs", "benchmarks", "build", "*.egg-info", "__pycache__"))
    missing = subprocess.run([python, "-c", "import horovod"], capture_output=True)
    assert missing.returncode != 0  # the environment starts without Horovod

    proc = subprocess.run(["make", "-C", src, "install", f"PYTHON={python}"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    where = subprocess.run([python, "-c", "import horovod.torch, hvdlm; "
                            "print(horovod.__file__); print(hvdlm.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    for path in where.stdout.split():
        assert path.startswith(str(tmp_path / "env")), where.stdout  # installed there, not seen

    bin_dir = tmp_path / "env" / "bin"
    assert {p.name for p in bin_dir.glob("hvdlm*")} == {"hvdlm", *(f"hvdlm-{c}" for c in COMMANDS)}
    help_ = subprocess.run([bin_dir / "hvdlm-train", "--help"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert help_.returncode == 0 and "usage: hvdlm.train" in help_.stdout, help_.stderr
    dispatched = subprocess.run([bin_dir / "hvdlm", "train", "--help"], capture_output=True,
                                text=True, cwd=tmp_path, timeout=120)
    assert dispatched.returncode == 0 and dispatched.stdout == help_.stdout, dispatched.stderr
    version = subprocess.run([bin_dir / "hvdlm", "--version"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=120)
    assert version.returncode == 0, version.stderr
    lines = version.stdout.splitlines()
    assert lines[0].startswith("hvdlm ") and lines[1].startswith("torch ")
    assert lines[2].startswith("horovod 0.28.1 (patch-set hash "), version.stdout
