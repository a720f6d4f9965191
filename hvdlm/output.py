"""Output that appears complete or not at all: atomic files and complete-or-absent folders.

    write_atomic(path, data)          # readers see the old file or the new one, whole
    refuse_existing(out)              # early, before the expensive work
    with staged(out) as stage:        # fill OUT.partial; it becomes OUT only if all went well
        (stage / "report.json").write_text(...)

Used by every writer in hvdlm: preprocessing and its shards, checkpoints, the run's record,
the rendezvous file, export, explain and audit.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from hvdlm.errors import DataError


def write_temp(path: Path, data: bytes) -> Path:
    """`data` in a new fsynced temporary file beside `path` (removed again if writing fails).

    The name is `.NAME.tmp<pid>`; it is created exclusively and never through a link."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)  # our own debris from an earlier try in this process
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` all at once: readers see the old file or the new, whole."""
    os.replace(write_temp(Path(path), data), path)


def fsync_dir(path: Path) -> None:
    """Make the renames inside folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_existing(out: Path) -> None:
    """A user's --out may be new or an empty folder, nothing else."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists; choose a new --out")


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Yield an empty OUT.partial; rename it to OUT on success, remove it on any error."""
    refuse_existing(out)
    stage = out.with_name(out.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        if out.exists():
            out.rmdir()  # empty, checked above
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
