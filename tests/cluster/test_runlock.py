"""One job per run folder (hvdlm/cluster/runlock.py), with real processes holding real locks:
a second one is refused in one line naming the first, a holder killed with SIGKILL is taken
over, a requeued Slurm job is never blocked by its previous run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvdlm.cluster import runlock
from tests.conftest import ROOT

# Takes the lock as rank 0 does (a refusal: the CLI's one line and status), says so, holds it
# until its stdin closes.
HOLD = """
import sys
from hvdlm.cluster import runlock
from hvdlm.errors import HvdlmError
try:
    runlock.acquire(sys.argv[1], wait_s=float(sys.argv[2]))
except HvdlmError as err:
    sys.stderr.write(f"hvdlm.train: error: {err}\\n")
    sys.exit(err.exit_code)
print("locked", flush=True)
sys.stdin.read()
"""
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_RESTART_COUNT")


def start(run: Path, job: str | None = None, restart: int = 0,
          wait_s: float = 60) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in SLURM_VARS}
    if job is not None:
        env.update(SLURM_JOB_ID=job, SLURM_RESTART_COUNT=str(restart))
    return subprocess.Popen([sys.executable, "-c", HOLD, str(run), str(wait_s)], cwd=ROOT,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def holding(proc: subprocess.Popen) -> subprocess.Popen:
    """Wait until `proc` says it holds the lock."""
    line = proc.stdout.readline()
    assert line == "locked\n", (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def refused(proc: subprocess.Popen) -> str:
    """The one line a refused process wrote (it must exit 1 within a few seconds)."""
    _, err = proc.communicate(timeout=20)
    lines = err.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, err)
    return lines[0]


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=20) == 0


def recorded(run: Path) -> dict:
    return json.loads((run / ".lock").read_text())


@pytest.fixture
def run(tmp_path) -> Path:
    """An existing, empty run folder."""
    (tmp_path / "run").mkdir()
    return tmp_path / "run"


def test_second_job_is_refused_with_one_line_naming_the_first(tmp_path):
    run = tmp_path / "run"
    first = holding(start(run, job="101"))
    try:
        started = time.monotonic()
        line = refused(start(run, job="202"))
        assert time.monotonic() - started < 10
        assert line.startswith("hvdlm.train: error: ")
        assert f"{run} is in use by Slurm job 101 on {socket.gethostname()}, pid {first.pid}" \
            in line, line
        # Outside Slurm too; and the first still holds it, whatever the others tried.
        assert f"pid {first.pid}" in refused(start(run))
        assert recorded(run)["pid"] == first.pid and recorded(run)["job"] == "101"
    finally:
        release(first)
    # It created RUN and wrote nothing but the lock into it: nothing is left behind.
    assert not run.exists()


def test_a_run_folder_with_content_keeps_it_and_the_next_job_locks_it(run):
    (run / "metrics.jsonl").write_text("{}\n")
    release(holding(start(run)))
    assert sorted(p.name for p in run.iterdir()) == [".lock", "metrics.jsonl"]
    release(holding(start(run)))  # an earlier holder that ended never blocks anyone


def test_holder_killed_with_sigkill_is_taken_over(run):
    first = holding(start(run, job="7"))
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=20)
    assert recorded(run)["pid"] == first.pid  # the dead holder's record is still there
    second = holding(start(run, job="8"))
    try:
        assert recorded(run) == {"job": "8", "restart": 0, "host": socket.gethostname(),
                                 "pid": second.pid}
        assert f"Slurm job 8 on {socket.gethostname()}, pid {second.pid}" in \
            refused(start(run, job="9"))
    finally:
        release(second)


def test_requeued_job_waits_for_its_previous_run_and_is_never_refused(run):
    previous = holding(start(run, job="303", restart=0))
    try:
        # The same job and restart (another step of the same allocation) is another job.
        assert "Slurm job 303 on" in refused(start(run, job="303", restart=0))
        assert "pid" in refused(start(run, job="3030", restart=1))
        # The requeued run waits while the previous one ends...
        requeued = start(run, job="303", restart=1, wait_s=30)
        time.sleep(1.0)
        assert requeued.poll() is None
    finally:
        release(previous)
    # ...and gets the lock as soon as it has ended.
    holding(requeued)
    assert recorded(run)["restart"] == 1 and recorded(run)["pid"] == requeued.pid
    release(requeued)


def test_requeued_job_goes_on_when_its_previous_run_does_not_let_go(run):
    previous = holding(start(run, job="404", restart=2))
    try:
        started = time.monotonic()
        requeued = holding(start(run, job="404", restart=3, wait_s=0.5))
        assert time.monotonic() - started < 20  # ~1 s: it went on instead of waiting forever
        assert "still locked by this job's previous run" in requeued.stderr.readline()
        assert recorded(run)["restart"] == 3
        # Once the previous run lets go, the requeued one holds the flock: others are refused.
        release(previous)
        time.sleep(0.5)
        assert f"pid {requeued.pid}" in refused(start(run, job="505"))
        release(requeued)
    finally:
        previous.kill()


def test_a_symlink_planted_as_the_lock_is_refused(run):
    target = run.parent / "elsewhere"
    target.write_text("untouched\n")
    (run / ".lock").symlink_to(target)
    line = refused(start(run))
    assert str(run / ".lock") in line and "lock" in line
    assert target.read_text() == "untouched\n"


@pytest.fixture
def in_process_locks():
    yield
    for lock in runlock._held.values():
        os.close(lock.fd)
        lock.created = []
    runlock._held.clear()


def test_a_lock_file_removed_while_being_locked_is_locked_again(tmp_path, monkeypatch,
                                                               in_process_locks):
    """A finishing holder that removes its folder's lock between our open and our flock: we
    would hold a lock on a file no one else can see. acquire starts over on the new file."""
    run = tmp_path / "run"
    real, calls = runlock._lock_or_wait, []

    def racing(fd, path, *args):
        got = real(fd, path, *args)
        if not calls:
            calls.append(fd)
            path.unlink()  # the previous holder's tidy-up, just before our flock
        return got

    monkeypatch.setattr(runlock, "_lock_or_wait", racing)
    lock = runlock.acquire(run, env={"SLURM_JOB_ID": "1"})
    assert len(calls) == 1 and runlock.acquire(run) is lock  # idempotent in one process
    assert os.fstat(lock.fd).st_ino == os.stat(run / ".lock").st_ino
    assert "Slurm job 1 on" in refused(start(run))


def test_forked_children_do_not_keep_the_lock(tmp_path, in_process_locks):
    """A DataLoader worker forked by rank 0 must not hold the lock after rank 0 is gone."""
    run = tmp_path / "run"
    lock = runlock.acquire(run)
    pid = os.fork()
    if pid == 0:  # the child: is the lock's descriptor still open here?
        try:
            os.fstat(lock.fd)
            os._exit(1)
        except OSError:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_holder_descriptions():
    holder = runlock.Holder(job="local", restart=0, host="n1", pid=5)
    assert holder.describe() == "a job outside Slurm on n1, pid 5"
    assert runlock.Holder("12", 2, "n2", 6).describe() == "Slurm job 12 (restart 2) on n2, pid 6"
    assert runlock.Holder("12", 1, "a", 1).is_earlier_run_of(runlock.Holder("12", 2, "b", 2))
    assert not runlock.Holder("12", 2, "a", 1).is_earlier_run_of(runlock.Holder("12", 2, "b", 2))
    assert not runlock.Holder("local", 0, "a", 1).is_earlier_run_of(
        runlock.Holder("local", 1, "b", 2))
