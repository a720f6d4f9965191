"""The real local Slurm cluster (tests/infra/local-slurm.sh) as a session fixture.

`slurm_cluster` starts the cluster once per test session (as root; it installs Debian's Slurm
packages if they are missing) and yields a `SlurmCluster` with small helpers around `sbatch`,
`sacct`, `squeue` and `scontrol`. When this is not root, or the start fails, the tests skip with
the reason; the root conftest turns such a skip of a `slurm`-marked test into a failure in CI.

The cluster is left running at the end of the session: starting it again is a no-op, and
stopping it could pull it from under another test session running on this machine at the same
time (the daemons are shared: /etc/slurm/slurm.conf, fixed ports). `tests/infra/local-slurm.sh stop`
ends it by hand.

The state folder is root's (default /var/lib/hvdlm-slurm, `$SLURM_STATE` overrides it): the
fixture asks the script for it (`local-slurm.sh check-state`, which creates it 0700 or refuses
it), checks it again itself (`check_state_dir`) and refuses, as a failure, a folder that another
user could have pre-created or redirected, before anything starts.
"""
from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "infra" / "local-slurm.sh"
# install ~35 s and start ~10 s on a fresh machine; stays under pytest.ini's 600
START_TIMEOUT = 540

# sacct states after which a job record will not change any more
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "REVOKED"}
# squeue states of a job that the controller still works on
ACTIVE_STATES = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "REQUEUED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT"}


class UnsafeStateError(Exception):
    """The local Slurm state folder is not safely root's; the message is one line."""


def check_state_dir(path: Path) -> None:
    """The same rule as local-slurm.sh's check: `path` is a real folder (not a symlink) owned by
    root and not writable by group or others, the folders above it are root's and not writable by
    others unless sticky, and nothing inside it is a symlink. Raises UnsafeStateError."""
    path = Path(path)
    if not path.is_absolute():
        raise UnsafeStateError(f"state folder {path}: not an absolute path")
    for parent in path.parents:
        try:
            pst = os.lstat(parent)
        except OSError as exc:
            raise UnsafeStateError(f"state folder {path}: {parent}: {exc.strerror}") from None
        if stat.S_ISLNK(pst.st_mode) or pst.st_uid != 0 or (
                pst.st_mode & 0o022 and not pst.st_mode & stat.S_ISVTX):
            raise UnsafeStateError(f"state folder {path}: {parent} above it is not root's "
                                   f"or is writable by others without the sticky bit")
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise UnsafeStateError(f"state folder {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeStateError(f"state folder {path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateError(f"state folder {path} is not a folder")
    if st.st_uid != 0:
        raise UnsafeStateError(f"state folder {path} is owned by uid {st.st_uid}, not root")
    if st.st_mode & 0o022:
        raise UnsafeStateError(f"state folder {path} is writable by group or others "
                               f"(mode {stat.S_IMODE(st.st_mode):o})")
    for root, dirs, files in os.walk(path):   # os.walk does not follow symlinks to folders
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                raise UnsafeStateError(f"state folder {path} contains a symlink "
                                       f"({os.path.join(root, name)})")


def _run(argv: list[str], timeout: float = 60, env: dict | None = None,
         cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


class SlurmCluster:
    """Helpers for tests that submit real jobs to the local cluster."""

    def __init__(self, state_dir: Path, start_output: str):
        self.state_dir = state_dir
        self.start_output = start_output

    # -- submitting -----------------------------------------------------------------------
    def sbatch(self, *args: str, env: dict | None = None, cwd: Path | str | None = None,
               timeout: float = 300) -> str:
        """Run `sbatch --parsable ARGS...` (ARGS may include --wait); return the job id.

        `env` is added to this process's environment (sbatch exports it to the job by default).
        With --wait a non-zero exit only means the job failed: the id is still returned; check
        it with `wait()`/`sacct_state()`. Raises AssertionError when no job was submitted.
        """
        proc = _run(["sbatch", "--parsable", *map(str, args)], timeout=timeout, env=env, cwd=cwd)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        job_id = lines[0].split(";")[0].strip() if lines else ""
        if not job_id.isdigit():
            raise AssertionError(f"sbatch {' '.join(map(str, args))} submitted nothing "
                                 f"(exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return job_id

    # -- looking -------------------------------------------------------------------------
    def sacct_states(self, job_id: str) -> dict[str, str]:
        """{job id or array task id: state} of the job's allocations (latest run of each)."""
        proc = _run(["sacct", "-n", "-P", "-X", "-j", str(job_id), "-o", "JobID,State"])
        states = {}
        for line in proc.stdout.splitlines():
            if "|" in line:
                jid, state = line.split("|", 1)
                states[jid.strip()] = state.split()[0] if state.strip() else ""
        return states

    def sacct_state(self, job_id: str) -> str | None:
        """State of one job in accounting (e.g. COMPLETED), or None if sacct has no record yet.

        For an array job it is the common state of all its tasks, or the distinct states
        joined by commas."""
        states = self.sacct_states(job_id)
        if not states:
            return None
        if str(job_id) in states:
            return states[str(job_id)]
        return ",".join(sorted(set(states.values())))

    def squeue_state(self, job_id: str) -> str | None:
        """State the controller reports (RUNNING, PENDING, ...), None once it forgot the job."""
        proc = _run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T"])
        states = [s.strip() for s in proc.stdout.splitlines() if s.strip()]
        if proc.returncode != 0 or not states:
            return None
        active = [s for s in states if s in ACTIVE_STATES]
        return active[0] if active else states[0]

    def restart_count(self, job_id: str) -> int:
        proc = _run(["scontrol", "show", "job", str(job_id)])
        for field in proc.stdout.split():
            if field.startswith("Restarts="):
                return int(field.split("=", 1)[1])
        raise AssertionError(f"no Restarts= for job {job_id}:\n{proc.stdout}{proc.stderr}")

    # -- waiting -------------------------------------------------------------------------
    def wait(self, job_id: str, timeout: float = 120) -> str:
        """Wait until the job (all its array tasks) has ended; return its state from sacct.

        Ended means: the controller no longer queues or runs it (a requeued job is not ended),
        and sacct has a final state for every job or array task the controller knew of
        (accounting lags the controller by a moment)."""
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            known = self._controller_ids(job_id)
            if known is None or known[1]:   # forgotten by the controller, or all ended there
                last = self.sacct_states(job_id)
                expected = known[0] if known else set()
                if last and expected <= set(last) \
                        and all(s in FINAL_STATES for s in last.values()):
                    return self.sacct_state(job_id)
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not end within {timeout:.0f} s: sacct {last}, "
                             f"squeue {self.squeue_state(job_id)}")

    def _controller_ids(self, job_id: str) -> tuple[set[str], bool] | None:
        """(ids of the job or its array tasks, whether all have ended) as the controller sees
        it, or None once it has forgotten the job (MinJobAge after the end)."""
        proc = _run(["squeue", "-h", "-r", "--states=all", "-j", str(job_id), "-o", "%i|%T"])
        rows = [ln.split("|", 1) for ln in proc.stdout.splitlines() if "|" in ln]
        if proc.returncode != 0 or not rows:
            return None
        ids = {jid.strip() for jid, _ in rows if "[" not in jid}
        ended = all(state.strip() not in ACTIVE_STATES and "[" not in jid for jid, state in rows)
        return ids, ended

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 0.3):
        """Poll `predicate()` until it is true; AssertionError naming `what` at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def scontrol(self, *args: str, timeout: float = 60) -> str:
        proc = _run(["scontrol", *map(str, args)], timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"scontrol {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr.strip()}")
        return proc.stdout

    def scancel(self, *args: str, timeout: float = 60) -> None:
        proc = _run(["scancel", *map(str, args)], timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"scancel {' '.join(args)} exited {proc.returncode}: "
                                 f"{proc.stderr.strip()}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster needs root (tests/infra/local-slurm.sh start)")
    # the script's own check first (it creates a missing folder 0700), then ours
    check = _run(["bash", str(SCRIPT), "check-state"], timeout=60)
    lines = check.stdout.strip().splitlines()
    if check.returncode != 0 or not lines:
        pytest.fail(f"tests/infra/local-slurm.sh check-state refused the state folder (exit "
                    f"{check.returncode}): {(check.stderr or check.stdout).strip()}", pytrace=False)
    state = Path(lines[-1])
    try:
        check_state_dir(state)
    except UnsafeStateError as exc:
        pytest.fail(f"unsafe local Slurm state: {exc}", pytrace=False)
    try:
        proc = _run(["bash", str(SCRIPT), "start"], timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.skip(f"tests/infra/local-slurm.sh start did not finish within {START_TIMEOUT} s")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        pytest.skip(f"tests/infra/local-slurm.sh start failed (exit {proc.returncode}):\n{tail}")
    yield SlurmCluster(state, proc.stdout.strip())
