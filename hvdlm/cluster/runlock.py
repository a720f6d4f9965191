"""One job per run folder: rank 0 holds RUN/.lock for the life of its process.

    lock = runlock.acquire(run)   # HvdlmError (one line naming the holder) if another job has it

Others must not share the folder: a RUN that group or others may write (or that another user
owns) is refused unless `train.shared_run_dir=true` accepts the risk, RUN is created 0700 and
RUN/.lock 0600 (less the umask): a user who could open the lock file could hold its flock and
keep every later start of the run out (an older 0644 lock file is made 0600 when taken).

The lock is `fcntl.flock` on a descriptor kept open until the process ends. The kernel drops it
when the process ends however it ends (kill -9 and OOM kills included), so a holder that is
gone never blocks anyone and there is nothing stale to break: the next job simply gets it. The
file also holds one JSON line about the holder (Slurm job id or "local", restart count, host,
pid), for the refusal message only; the flock, not the file, decides who owns the folder.

Slurm requeue: Slurm ends every process of a job before it starts it again, so the previous
incarnation's lock is normally gone already. Should it linger (a node still cleaning up, a
network filesystem that drops the lock late), the same job id with a higher restart count is
our own job, never refused: we wait up to LOCK_WAIT_S (60 s) for it to end, then go on with a
warning and take the flock in the background as soon as it is released.

The lock is taken before Trainer reads RUN's checkpoints, so a run that takes over from a killed
holder resumes from the holder's last checkpoint, and nobody reads checkpoints that another job
is writing or pruning. If RUN did not exist, it is created here and removed again at exit when
nothing but the lock was ever written into it (a run refused by the start checks leaves nothing
behind). The lock file itself is only removed then, while we still hold it; `acquire` checks
after each flock that the file it locked is still the one at RUN/.lock, and starts over if not.

Shared filesystems: flock is honoured across nodes on NFSv4 and v3 (Linux maps it to POSIX
locks, through NLM for v3), GPFS/Spectrum Scale, BeeGFS, and Lustre mounted with `-o flock`.
Lustre mounted with `localflock` only sees the locks of the same node, and with `noflock` (or
an NFS mount with `nolock`/`local_lock=all`) a second job on another node is not stopped: there,
keep one job per --out yourself. A filesystem that refuses flock gets a warning, not a refusal.
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from hvdlm.errors import HvdlmError
from hvdlm.output import private_mode, share_private_files

log = logging.getLogger("hvdlm")
LOCK_NAME = ".lock"
POLL_S = 0.2
LOCK_WAIT_S = 60.0  # a requeued job's wait for its previous incarnation's lock


@dataclass(frozen=True)
class Holder:
    """Who holds a run folder: what RUN/.lock says."""

    job: str      # SLURM_JOB_ID, or "local" outside Slurm
    restart: int  # SLURM_RESTART_COUNT (0 for the first run of a job)
    host: str
    pid: int

    @classmethod
    def of_this_process(cls, env: Mapping[str, str] = os.environ) -> "Holder":
        return cls(job=env.get("SLURM_JOB_ID") or "local",
                   restart=int(env.get("SLURM_RESTART_COUNT") or 0),
                   host=socket.gethostname(), pid=os.getpid())

    def describe(self) -> str:
        job = "a job outside Slurm" if self.job == "local" else f"Slurm job {self.job}"
        restart = f" (restart {self.restart})" if self.restart else ""
        return f"{job}{restart} on {self.host}, pid {self.pid}"

    def is_earlier_run_of(self, other: "Holder") -> bool:
        """A previous incarnation of `other`'s Slurm job (requeued since)."""
        return self.job == other.job != "local" and self.restart < other.restart


class RunLock:
    """A held lock on one run folder (kept in `_held` so that its descriptor stays open)."""

    def __init__(self, run: Path, fd: int, created: list[Path]):
        self.run, self.fd, self.created = run, fd, created
        self.pid = os.getpid()
        atexit.register(self._tidy)
        # A forked child (a DataLoader worker) shares the locked file; closing its copy keeps
        # the lock tied to this process alone, so that it ends with this process, not later.
        os.register_at_fork(after_in_child=lambda: _close_quietly(fd))

    def _tidy(self) -> None:
        """At exit: remove RUN (and the parents made for it) if only the lock was written."""
        if os.getpid() != self.pid or not self.created:
            return
        try:
            if [p.name for p in self.run.iterdir()] != [LOCK_NAME]:
                return
            (self.run / LOCK_NAME).unlink()  # still locked by us: see acquire's inode check
            for folder in self.created:      # RUN first, then the parents made for it
                os.rmdir(folder)
        except OSError:
            pass  # something else appeared meanwhile: leave it


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


_held: dict[Path, RunLock] = {}


def acquire(run: str | Path, env: Mapping[str, str] = os.environ,
            wait_s: float | None = None, shared: bool = False) -> RunLock:
    """Lock `run` for this process's life; HvdlmError naming the holder if another job has it.

    Idempotent within a process. `wait_s`: how long a requeued job waits for its own previous
    incarnation's lock (default LOCK_WAIT_S). `shared` (train.shared_run_dir): accept a RUN
    that others may write, and give private files the umask's mode (output.private_mode).
    """
    run = Path(run).absolute()
    if run in _held:
        return _held[run]
    share_private_files(shared)
    me = Holder.of_this_process(env)
    if wait_s is None:
        wait_s = LOCK_WAIT_S
    path = run / LOCK_NAME
    created: list[Path] = []
    while True:
        created += _make_folder(run)
        if not shared:
            _refuse_shared(run)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, private_mode())
        except OSError as err:
            raise HvdlmError(f"{path}: cannot open the run folder's lock ({err.strerror})") \
                from None
        _own_lock_file(fd, path, shared)
        locked = _lock_or_wait(fd, path, run, me, wait_s)
        if locked and not _same_file(fd, path):
            os.close(fd)  # a finishing run removed the file we locked: lock the new one
            continue
        break
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(asdict(me)) + "\n").encode(), 0)
    _held[run] = RunLock(run, fd, created)
    return _held[run]


def _refuse_shared(run: Path) -> None:
    """A RUN that another user may write (or owns) lets them plant links at the names a run
    writes, or swap its checkpoints: refused unless train.shared_run_dir says it is meant."""
    info = os.stat(run)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        why = "owned by another user" if info.st_uid != os.geteuid() else \
            "writable by group or others"
        raise HvdlmError(f"{run}: {why} (mode {stat.S_IMODE(info.st_mode):o}): others could "
                         "replace what the run writes; use a private folder, or set "
                         "train.shared_run_dir=true to accept that risk")


def _own_lock_file(fd: int, path: Path, shared: bool) -> None:
    """The lock must be this user's regular file, unreadable by others (who could otherwise
    open it and hold the flock): a lock file from before this rule is made 0600."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise HvdlmError(f"{path}: not a regular file of this user; remove it")
    os.set_blocking(fd, True)
    if not shared and info.st_mode & 0o077:
        os.fchmod(fd, stat.S_IMODE(info.st_mode) & 0o700)


def _make_folder(run: Path) -> list[Path]:
    """Create `run` (and missing parents); the folders created, innermost first."""
    missing = []
    folder = run
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made = []
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=private_mode(folder=True) if folder == run else 0o777)
            made.append(folder)
        except FileExistsError:
            pass  # made by someone else meanwhile: not ours to remove
        except OSError as err:
            raise HvdlmError(f"{folder}: cannot create the run folder ({err.strerror})") from None
    return made[::-1]


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another open file holds it; None: the filesystem has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


def _lock_or_wait(fd: int, path: Path, run: Path, me: Holder, wait_s: float) -> bool:
    """Take the flock on `fd`; refuse, wait for our own previous incarnation, or go on
    unlocked where the filesystem cannot lock. Returns whether the flock is held."""
    got = _try_flock(fd)
    if got is None:
        log.warning("%s: this filesystem does not support flock; nothing stops a second job "
                    "from training into %s at the same time", path, run)
        return False
    if got:
        return True
    holder = _read_holder(fd)
    if holder is None or not holder.is_earlier_run_of(me):
        os.close(fd)
        who = holder.describe() if holder else "another process (it did not say which)"
        raise HvdlmError(f"{run} is in use by {who}: one job per run folder; wait for it to "
                         "end or train into another --out")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        if _try_flock(fd):
            return True
    log.warning("%s: still locked by this job's previous run (%s) after %.0f s; going on, "
                "and taking the lock when it lets go", run, holder.describe(), wait_s)
    threading.Thread(target=fcntl.flock, args=(fd, fcntl.LOCK_EX), daemon=True,
                     name="hvdlm-runlock").start()
    return False


def _read_holder(fd: int) -> Holder | None:
    """What the lock file says; a holder may be between truncating and writing it: retry."""
    for _ in range(10):
        try:
            return Holder(**json.loads(os.pread(fd, 4096, 0).decode()))
        except (ValueError, TypeError, UnicodeDecodeError):
            time.sleep(0.05)
    return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
