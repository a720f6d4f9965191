"""One job per run folder, with real training runs: a second `hvdlm.train` on a RUN in use is
refused in one line and the first finishes unharmed; after kill -9 of a run, the next one takes
the folder over and resumes from its last checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, horovodrun, logged_steps, run_module
from tests.multiproc.test_train import TINY

pytestmark = pytest.mark.horovod


def start_training(data: Path, run: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hvdlm.train", "--data", str(data), "--out",
                             str(run), *TINY, *overrides], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early: {proc.stderr.read()}"
        if (run / ".lock").exists() and (run / "metrics.jsonl").exists() and \
                any(r["step"] >= step for r in logged_steps(run)):
            return
        time.sleep(0.1)
    raise AssertionError(f"the run did not reach step {step}")


def test_second_run_on_a_run_folder_in_use_is_refused_and_the_first_is_unharmed(
        byte_dataset, tmp_path):
    run = tmp_path / "run"
    first = start_training(byte_dataset, run, "train.max_steps=60", "train.ckpt_interval=4",
                           "train.micro_batch=4")
    try:
        wait_for_step(first, run, 5)  # past its first checkpoint
        first.send_signal(signal.SIGSTOP)  # it holds the folder while the others try
        try:
            # Refused before any checkpoint is read: not "already has checkpoints" (exit 2).
            # A run that waited for the lock would hang: the subprocess timeouts (over 10x the
            # 5 s and 11 s these take on 2 loaded cores) fail it; no tighter time bound.
            second = run_module("hvdlm.train", "--data", byte_dataset, "--out", run, *TINY,
                                "train.max_steps=60", "--resume", "never", timeout=120)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 1 and len(lines) == 1, second.stderr
            assert lines[0].startswith(f"hvdlm.train: error: {run} is in use by a job outside "
                                       f"Slurm on ") and f"pid {first.pid}" in lines[0], lines

            # A 2-rank job: rank 0 is refused before hvd.init(), horovodrun ends rank 1.
            job = horovodrun(2, sys.executable, "-m", "hvdlm.train", "--data", byte_dataset,
                             "--out", run, *TINY, "train.max_steps=60", check=False,
                             timeout=180)
            assert job.returncode != 0
            ours = [ln for ln in job.stderr.splitlines() if "hvdlm.train: error:" in ln]
            assert len(ours) == 1 and ours[0].startswith("[0]<stderr>:") and \
                f"pid {first.pid}" in ours[0], job.stderr
        finally:
            first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=240)
    finally:
        first.kill()
    assert first.returncode == 0, err
    # Unharmed: every step logged once, by the first run alone, and its checkpoints.
    assert [r["step"] for r in logged_steps(run)] == list(range(1, 61))
    assert not any("resumed_from" in r for r in logged_steps(run))
    assert (run / "checkpoints" / "step-00000060.pt").exists()
    assert "finished: step 60 of 60" in (run / "log.txt").read_text()


def test_after_kill_minus_9_the_next_run_takes_over_and_resumes(byte_dataset, tmp_path):
    run = tmp_path / "run"
    first = start_training(byte_dataset, run, "train.max_steps=100000",
                           "train.ckpt_interval=2", "train.micro_batch=4")
    try:
        wait_for_step(first, run, 5)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    saved = sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.pt"))
    assert saved and (run / ".lock").exists()  # the dead run's lock file, no longer locked
    last = saved[-1]
    # A kill between a checkpoint's rename and `latest` leaves it uncommitted: resume follows
    # `latest` (checkpoint.py), at most one checkpoint behind the newest file.
    named = int((run / "checkpoints" / "latest").read_text().strip()[5:13])
    assert named in saved and last - named <= 2
    proc = run_module("hvdlm.train", "--data", byte_dataset, "--out", run, *TINY,
                      f"train.max_steps={last + 2}", "train.ckpt_interval=2",
                      "train.micro_batch=4", timeout=240)
    assert proc.returncode == 0, proc.stderr
    resumed = [r for r in logged_steps(run) if "resumed_from" in r]
    assert [r["resumed_from"] for r in resumed] == [named]
    assert (run / "checkpoints" / f"step-{last + 2:08d}.pt").exists()
