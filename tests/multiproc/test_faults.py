"""Injected faults under real Horovod ranks: kill -9, signals, NaNs, bad data.

Each test breaks something for real and checks what a user would see: the exit status, one
clear line, and a run that resumes exactly where it should.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from hvdlm.errors import EXIT_STOPPED
from hvdlm.training.record.logs import read_metrics
from tests.conftest import ROOT, run_module
from tests.multiproc.test_train import TINY, final_params, train

pytestmark = pytest.mark.horovod


def test_kill_minus_9_ends_the_job_fast_and_names_the_rank(byte_dataset, tmp_path):
    started = time.monotonic()
    proc = train(2, byte_dataset, tmp_path / "run", "train.max_steps=200", "train.micro_batch=4",
                 "train.ckpt_interval=2", env={"HVDLM_FAULT_KILL": "1:3"}, check=False)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    # ~8 s on 2 loaded cores; a survivor left waiting in allreduce would hang until the
    # horovodrun timeout. The bound only guards against that, at over 10x the typical time.
    assert elapsed < 120, f"job took {elapsed:.1f} s to exit after a rank died"
    assert "Process name: 1" in proc.stderr and "Exit code: 137" in proc.stderr
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    assert max(steps) <= 3  # the other rank did not carry on alone


def _rank_processes(parent: subprocess.Popen, n: int, timeout: float = 60) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = []
        for p in psutil.Process(parent.pid).children(recursive=True):
            try:
                if "python" in p.name() and "hvdlm.train" in " ".join(p.cmdline()):
                    procs.append(p)
            except psutil.Error:  # a helper process that already exited
                pass
        if len(procs) >= n:
            return procs
        time.sleep(0.2)
    raise AssertionError("ranks did not start")


def _wait_for_step(run: Path, step: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "metrics.jsonl").exists() and any(
                r.get("step", 0) >= step for r in read_metrics(run) if "loss" in r):
            return
        time.sleep(0.1)
    raise AssertionError(f"run did not reach step {step}")


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_to_one_rank_stops_all_at_one_step_with_a_checkpoint(sig, byte_dataset, tmp_path):
    run = tmp_path / "run"
    runner = Path(sys.executable).with_name("horovodrun")
    cmd = [str(runner), "-np", "2", "-H", "localhost:2", "--gloo", sys.executable, "-m",
           "hvdlm.train", "--data", str(byte_dataset), "--out", str(run), *TINY,
           "train.max_steps=100000", "train.ckpt_interval=100000", "train.micro_batch=4"]
    parent = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        ranks = _rank_processes(parent, 2)
        _wait_for_step(run, 3)
        # Only one rank hears the signal; the all-reduced flag must stop both.
        ranks[-1].send_signal(sig)
        _, stderr = parent.communicate(timeout=90)
    finally:
        parent.kill()
    assert f"Exit code: {EXIT_STOPPED}" in stderr
    saved = list((run / "checkpoints").glob("step-*.pt"))
    assert len(saved) == 1
    stopped_at = int(saved[0].stem.split("-")[1])
    assert stopped_at == max(r["step"] for r in read_metrics(run) if "loss" in r)
    assert not list((run / "checkpoints").glob(".*tmp*"))  # nothing half-written
    state = torch.load(saved[0], weights_only=True)
    assert state["step"] == stopped_at and state["consumed_samples"] == stopped_at * 8


def test_single_rank_stop_exit_code(byte_dataset, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hvdlm.train", "--data", str(byte_dataset),
                             "--out", str(run), *TINY, "train.max_steps=100000",
                             "train.ckpt_interval=100000"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_step(run, 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == EXIT_STOPPED
    finally:
        proc.kill()
    assert len(list((run / "checkpoints").glob("step-*.pt"))) == 1


def test_non_finite_steps_are_skipped_on_all_ranks_then_stop(byte_dataset, tmp_path):
    # One bad step on rank 1 only: skipped everywhere, the run goes on and finishes.
    run = tmp_path / "tolerated"
    proc = train(2, byte_dataset, run, "train.max_steps=6", "train.max_bad_steps=1",
                 env={"HVDLM_FAULT_NONFINITE": "1:2"})
    assert "non-finite gradient norm" in proc.stderr
    assert (run / "checkpoints" / "step-00000006.pt").exists()

    # More bad steps than allowed: one clear error (rank 0's; the others wait for the launcher
    # to end them, issue 33), the last good checkpoint kept.
    run = tmp_path / "stopped"
    proc = train(2, byte_dataset, run, "train.max_steps=20", "train.max_bad_steps=2",
                 "train.ckpt_interval=2", env={"HVDLM_FAULT_NONFINITE": "1:2,0:3,1:4"},
                 check=False)
    assert proc.returncode != 0
    rank_lines = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    said = [line for line in rank_lines if "more than train.max_bad_steps=2 non-finite" in line]
    assert said and said[0].startswith("[0]"), proc.stderr  # no rank shows a traceback (below)
    assert not any("Traceback" in line for line in rank_lines)
    # Steps 3 and 4 (0-based 2, 3) were skipped: the step-4 checkpoint holds step 2's weights.
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == \
        ["step-00000002.pt", "step-00000004.pt"]
    before, after = final_params(run, 2), final_params(run, 4)
    assert all(torch.equal(before[k], after[k]) for k in before)


def _copy_dataset(src: Path, dest: Path) -> Path:
    import shutil
    shutil.copytree(src, dest)
    return dest


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_shard_is_refused_at_start(damage, byte_dataset, tmp_path):
    data = _copy_dataset(byte_dataset, tmp_path / "data")
    shard = sorted((data / "train").glob("*.h5"))[0]
    if damage == "delete":
        shard.unlink()
    else:
        os.truncate(shard, shard.stat().st_size - 100)
    proc = run_module("hvdlm.train", "--data", data, "--out", tmp_path / "run", *TINY)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(shard) in lines[0], proc.stderr


def test_dataset_with_another_tokenizer_is_refused_on_resume(byte_dataset, tmp_path):
    run = tmp_path / "run"
    train(1, byte_dataset, run, "train.max_steps=2")
    other = _copy_dataset(byte_dataset, tmp_path / "other")
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text() + "\n")
    proc = run_module("hvdlm.train", "--data", other, "--out", run, *TINY, "train.max_steps=4")
    assert proc.returncode == 1
    assert "tokenizer" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_killed_preprocessing_leaves_no_dataset_and_the_next_run_completes(tmp_path):
    from tests.conftest import small_corpus
    corpus = small_corpus(tmp_path / "corpus", n_files=60)
    out = tmp_path / "data"
    args = [sys.executable, "-m", "hvdlm.preprocess", str(corpus), "--out", str(out),
            "--vocab-size", "3000", "--workers", "1"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "data.partial"
    deadline = time.monotonic() + 60
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "preprocessing ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "manifest.json").exists() and not out.exists()

    run_module("hvdlm.preprocess", corpus, "--out", out, "--vocab-size", "3000",
               "--workers", "1", check=True)
    assert (out / "manifest.json").exists() and not partial.exists()
    assert run_module("hvdlm.verify", out).returncode == 0
