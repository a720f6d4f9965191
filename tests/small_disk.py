"""A real full disk for tests: a small tmpfs mounted on a test's folder (needs root).

    with small_disk(tmp_path / "disk", "2m") as disk:   # writes past 2 MiB fail with ENOSPC
        ...

RLIMIT_FSIZE only makes one process's large writes fail (EFBIG); a full file system fails
every writer, small files included, as a real one does.
"""
from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

PAGE = os.sysconf("SC_PAGE_SIZE")
_NOT_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def needs_root(test):
    """Skips without root; marked `root`, so that CI fails instead (tests/ci_rule.py)."""
    return pytest.mark.root(_NOT_ROOT(test))


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` on `path` (created), unmounted again however the block ends."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True, capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int) -> None:
    """Fill `disk` until exactly `leave` bytes (whole pages) stay free."""
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * (free_bytes(disk) - leave))
    assert free_bytes(disk) == leave, (free_bytes(disk), leave)
