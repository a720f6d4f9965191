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
file. Temporary names are unguessable and created O_EXCL|O_NOFOLLOW, appended files
(`open_append`) must be this user's regular files, private files and folders (`private=True`)
are 0600/0700 less the umask, and an OUT.partial is removed only if hvdlm made it (sticky bit,
this user's). Used by every writer in hvdlm: preprocessing and its shards, checkpoints, the run's
record, the rendezvous file, export, explain and audit.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TextIO

from hvdlm.errors import DataError

FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# Private files (a run's checkpoints and record, audit and explain outputs): 0600 and folders
# 0700, less the umask. `train.shared_run_dir=true` (share_private_files) leaves it to the umask.
_private = {"file": 0o600, "folder": 0o700}


def share_private_files(shared: bool) -> None:
    """For teams that share run folders on purpose: private files then get the umask's mode."""
    _private.update(file=0o666 if shared else 0o600, folder=0o777 if shared else 0o700)


def private_mode(folder: bool = False) -> int:
    """The creation mode of a private file (or folder); the umask still applies."""
    return _private["folder" if folder else "file"]


def temp_name(path: Path) -> Path:
    """Where a new `path` is written before it is renamed: `.NAME.tmp` and 18 random
    digits beside it, a name nobody can guess to plant a link there first."""
    return path.with_name(f".{path.name}.tmp{secrets.randbelow(10**18):018d}")


def write_temp(path: Path, data: bytes, mode: int | None = None, private: bool = False) -> Path:
    """`data` in a new fsynced temporary file beside `path` (removed again if writing fails).

    The file is created exclusively and never through a link. Its permissions are 0644 less
    the umask (private_mode() less the umask if `private`), or exactly `mode` when given
    (0o600 for a file that holds a secret)."""
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode if mode is not None else private_mode() if private else 0o644)
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


def write_atomic(path: Path, data: bytes, mode: int | None = None,
                 private: bool = False) -> None:
    """Replace `path` by `data` all at once: readers see the old file or the new, whole."""
    os.replace(write_temp(Path(path), data, mode, private), path)


def open_append(path: Path) -> TextIO:
    """`path` (created private if missing) opened for appending lines, never through a link,
    and only if it is a regular file of this user: DataError otherwise."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, private_mode())
    except OSError as err:
        raise DataError(f"{path}: cannot append to it ({err.strerror}; a link or a FIFO is "
                        "refused)") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise DataError(f"{path}: not a regular file of this user; refusing to append to it")
    os.set_blocking(fd, True)
    return open(fd, "a", buffering=1)


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield the temporary name for a writer that opens files itself; it replaces `path` when
    the block ends well and is removed when it fails. Not fsynced: for files inside a stage,
    whose rename to OUT is what makes them appear."""
    tmp = temp_name(path)
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
    """--out may be new or an empty folder; with --overwrite also an output of the command.
    Never a symbolic link, nor a place inside a run's checkpoints/ folder."""
    if out.is_symlink():
        raise DataError(f"{out}: a symbolic link; give the folder it points to as --out")
    for folder in out.absolute().parents:
        if folder.name == "checkpoints" and ((folder / "latest").exists()
                                             or (folder.parent / ".lock").exists()):
            raise DataError(f"{out}: inside a run's checkpoints folder {folder}; choose "
                            "another --out")
    if not out.exists() or out.is_dir() and not any(out.iterdir()):
        return
    if overwrite is None:
        raise DataError(f"{out}: already exists; choose a new --out")
    if not overwrite.given:
        raise DataError(f"{out}: already exists (use --overwrite to replace it)")
    if out.is_symlink() or not (out / overwrite.marker).is_file():
        raise DataError(f"{out}: not {overwrite.kind} (no {overwrite.marker}); --overwrite "
                        "replaces only those")


def new_stage(out: Path, overwrite: Overwrite | None = None, private: bool = False) -> Path:
    """An empty OUT.partial, once OUT may be written. An unfinished earlier one is removed if
    hvdlm made it (this user's folder with the sticky bit, which every stage has until it is
    published); anything else there is refused, never deleted. `private`: the stage (and so
    OUT) is made with private_mode(folder=True)."""
    refuse_existing(out, overwrite)
    stage = partial(out)
    if stage.exists() or stage.is_symlink():
        info = os.lstat(stage)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() \
                or not info.st_mode & stat.S_ISVTX:
            raise DataError(f"{stage}: exists and was not left by hvdlm; move it away")
        shutil.rmtree(stage)
    stage.parent.mkdir(parents=True, exist_ok=True)
    stage.mkdir(mode=private_mode(folder=True) if private else 0o777)
    _set_sticky(stage, True)
    return stage


def _set_sticky(folder: Path, on: bool) -> None:
    """The sticky bit marks a stage as hvdlm's (it restricts nothing in a folder of one user)."""
    mode = stat.S_IMODE(os.lstat(folder).st_mode)
    os.chmod(folder, mode | stat.S_ISVTX if on else mode & ~stat.S_ISVTX)


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
    _set_sticky(stage, False)
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
def staged(out: Path, overwrite: Overwrite | None = None,
           private: bool = False) -> Iterator[Path]:
    """Yield an empty OUT.partial; rename it to OUT on success, remove it on any error."""
    stage = new_stage(out, overwrite, private)
    with removed_on_error(stage):
        yield stage
        publish(stage, out, overwrite)
