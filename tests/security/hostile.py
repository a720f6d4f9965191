"""Helpers of the hostile-run suites (test_untrusted_runs.py, test_untrusted_models.py): a
victim's trained run in a folder a second user can reach, crafted copies of it, and `refused`,
which runs one command the way a user would and checks that it ends in a one-line refusal,
fast and small.

    line = refused("hvdlm.generate", "--run", run, "--prompt", "x")
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch

from tests.conftest import ROOT, TINY_RUN

SECONDS = 10          # every attack ends (in a refusal) within this, in CPU seconds
PEAK_BYTES = 512 << 20  # and the command's peak memory stays below this

# Forks and execs the command from a fresh, small interpreter and writes the command's peak RSS
# and CPU seconds (its rusage) to argv[1] (as tests/security/test_untrusted_corpus.py does).
MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss * 1024} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def run_measured(module: str, *args, timeout: float = SECONDS * 3,
                 stdin: bytes | None = None) -> tuple[subprocess.CompletedProcess, int, float]:
    """python -m module ARGS: its result, peak RSS in bytes and CPU seconds. A command still
    running after `timeout` wall seconds (one waiting on a FIFO uses no CPU) fails the test."""
    peak = Path(os.environ.get("TMPDIR", "/tmp")) / f"hvdlm-peak-{os.getpid()}"
    argv = [sys.executable, "-c", MEASURE, peak, "-m", module,
            *(a if isinstance(a, bytes) else str(a) for a in args)]  # bytes: not UTF-8
    # A session of its own: a command that hangs (on a FIFO) is killed with its launcher.
    with subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True) as child:
        try:
            out, err = child.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise AssertionError(f"{module} still running after {timeout} s") from None
    proc = subprocess.CompletedProcess(argv, child.returncode, out, err)
    try:
        size, seconds = peak.read_text().split()
    finally:
        peak.unlink(missing_ok=True)
    return proc, int(size), float(seconds)


def refused(module: str, *args) -> str:
    """Run the command; assert a refusal (exit 1 or 2) of one line on stderr within SECONDS
    of CPU and PEAK_BYTES; that line. CPU time, not wall time: on a shared, loaded test machine
    importing torch alone may take seconds of waiting; a hang is caught by the wall timeout."""
    proc, peak, seconds = run_measured(module, *args)
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    assert proc.returncode in (1, 2), (proc.returncode, err[-5:])
    assert len(err) == 1, err[-8:]
    assert seconds < SECONDS, (seconds, err)
    assert peak < PEAK_BYTES, (peak >> 20, err)
    return err[0]


def train_victim_run(data: Path, run: Path, *extra: str, umask: int = 0o022,
                     check: bool = True) -> subprocess.CompletedProcess:
    """The victim trains a tiny run into `run` under `umask` (as a shell with that umask)."""
    script = ("import os, sys; os.umask(int(sys.argv[1], 8)); from hvdlm import train; "
              "sys.exit(train.main(sys.argv[2:]))")
    proc = subprocess.run([sys.executable, "-c", script, oct(umask)[2:], "--data", data,
                           "--out", run, *TINY_RUN, *extra], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def snapshot(*paths: Path) -> dict[str, bytes]:
    """The bytes of the files (a victim's), to compare after an attack."""
    return {str(p): p.read_bytes() for p in paths}


def newest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*.pt"))[-1]


def crafted_run(victim: Path, dest: Path, change: Callable[[dict], None]) -> Path:
    """A copy of the victim's run whose newest checkpoint `change` rewrote (checksum fixed)."""
    shutil.copytree(victim, dest, ignore=shutil.ignore_patterns(".lock"))
    path = newest_checkpoint(dest)
    state = torch.load(path, map_location="cpu", weights_only=True)
    change(state)
    write_checkpoint(path, state)
    return dest


def write_checkpoint(path: Path, state: dict) -> None:
    """`state` saved at `path` with a matching .sha256: sound on disk, whatever it says."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getvalue())
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(buffer.getvalue()).hexdigest())
