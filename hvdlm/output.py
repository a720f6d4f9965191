"""Output that appears complete or not at all: atomic files and complete-or-absent folders.

    write_atomic(path, data)          # readers see the old file or the new one, whole
    with replacing(path) as tmp:      # the same for a writer that needs a file name (h5py)
        h5py.File(tmp, "w") ...
    refuse_existing(out)              # early, before the expensive work
    with staged(out) as stage:        # fill OUT.partial; it becomes OUT only if all went well
        (stage / "report.json").write_text(...)

A command whose work spans several processes (`hvdlm.preprocess`'s array tasks) uses the parts
of `staged` one by one: `new_stage`, `removed_on_error`, `publish`. A command with --overwrite
passes an `Overwrite`, which says what an earlier output looks like; without one, --out must
be new or an empty folder. A full disk while writing under the stage is one line naming the
file. Used by every writer in hvdlm: preprocessing and its shards, checkpoints, the run's
record, the rendezvous file, export, explain and audit.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from hvdlm.errors import DataError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def temp_name(path: Path) -> Path:
    """Where a new `path` is written before it is renamed: `.NAME.tmp<pid>` beside it."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_temp(path: Path, data: bytes, mode: int | None = None) -> Path:
    """`data` in a new fsynced temporary file beside `path` (removed again if writing fails).

    The file is created exclusively and never through a link. Its permissions are 0644 less
    the umask, or exactly `mode` when given (0o600 for a file that holds a secret)."""
    tmp = temp_name(path)
    tmp.unlink(missing_ok=True)  # our own debris from an earlier try in this process
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o644 if mode is None else mode)
        with open(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # whatever the umask
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` by `data` all at once: readers see the old file or the new, whole."""
    os.replace(write_temp(Path(path), data, mode), path)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield the temporary name for a writer that opens files itself; it replaces `path` when
    the block ends well and is removed when it fails. Not fsynced: for files inside a stage,
    whose rename to OUT is what makes them appear."""
    tmp = temp_name(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(tmp)  # h5py's errors name no file; the file is gone after this
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(path: Path) -> None:
    """Make the renames inside folder `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- complete-or-absent folders ------------------------------------------------------------

@dataclass(frozen=True)
class Overwrite:
    """A command's --overwrite: whether it was given, and what an output of the command has."""

    given: bool
    marker: str  # a file every complete output has (manifest.json)
    kind: str    # what such a folder is, for the error message


def partial(out: Path) -> Path:
    """The staging folder of `out`: OUT.partial beside it."""
    return out.with_name(out.name + ".partial")


def refuse_existing(out: Path, overwrite: Overwrite | None = None) -> None:
    """--out may be new or an empty folder; with --overwrite also an output of the command."""
    if not out.exists() or out.is_dir() and not any(out.iterdir()):
        return
    if overwrite is None:
        raise DataError(f"{out}: already exists; choose a new --out")
    if not overwrite.given:
        raise DataError(f"{out}: already exists (use --overwrite to replace it)")
    if out.is_symlink() or not (out / overwrite.marker).is_file():
        raise DataError(f"{out}: not {overwrite.kind} (no {overwrite.marker}); --overwrite "
                        "replaces only those")


def new_stage(out: Path, overwrite: Overwrite | None = None) -> Path:
    """An empty OUT.partial (an unfinished earlier one is removed), once OUT may be written."""
    refuse_existing(out, overwrite)
    stage = partial(out)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


@contextlib.contextmanager
def full_disk_is_one_line(folder: Path) -> Iterator[None]:
    """A full disk or quota while writing under `folder` becomes a DataError naming the file."""
    try:
        yield
    except OSError as err:
        if err.errno not in FULL_DISK:
            raise
        # A failed write() (or h5py's) names no file; the one being written was modified last.
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        name = err.filename or max(files, key=lambda p: p.stat().st_mtime_ns, default=folder)
        raise DataError(f"{name}: cannot write ({os.strerror(err.errno)})") from None


@contextlib.contextmanager
def removed_on_error(folder: Path) -> Iterator[None]:
    """Delete `folder` if the block fails, so no half-written output is left behind."""
    try:
        with full_disk_is_one_line(folder):
            yield
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def publish(stage: Path, out: Path, overwrite: Overwrite | None = None) -> None:
    """Rename the finished `stage` to `out`, checked again (an old output is replaced only
    here, after the work: until this rename it stays whole)."""
    refuse_existing(out, overwrite)
    old = None
    if out.exists() or out.is_symlink():  # an empty folder, or an output --overwrite replaces
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None and old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()


@contextlib.contextmanager
def staged(out: Path, overwrite: Overwrite | None = None) -> Iterator[Path]:
    """Yield an empty OUT.partial; rename it to OUT on success, remove it on any error."""
    stage = new_stage(out, overwrite)
    with removed_on_error(stage):
        yield stage
        publish(stage, out, overwrite)
