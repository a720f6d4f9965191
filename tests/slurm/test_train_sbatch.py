"""slurm/train.sbatch on the real local cluster: a 2-rank run completes, and a USR1 to the batch
script (as Slurm sends it before the time limit) checkpoints, requeues and resumes exactly.

    sudo .venv/bin/python -m pytest tests/slurm/test_train_sbatch.py -v
"""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
import torch

from hvdlm.training.record.files import read_starts
from tests.conftest import ROOT, horovodrun, logged_steps

pytestmark = [pytest.mark.slurm, pytest.mark.horovod]

SCRIPT = ROOT / "slurm" / "train.sbatch"
# A model small enough that Slurm and Python start-up dominate; log every step to follow it.
TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.seq_len=32",
        "train.warmup_steps=0", "train.log_interval=1", "train.micro_batch=8",
        "train.eval_batches=1"]


def export(data: Path | None, run: Path | None, args: list[str], tmp_path: Path) -> str:
    """sbatch --export value: the venv's python (hvdlm importable from any folder), a private
    rendezvous dir, and the run's settings in the environment form (None: given as arguments)."""
    settings = {"HVDLM_PYTHON": sys.executable, "PYTHONPATH": ROOT,
                "HVDLM_RENDEZVOUS_DIR": tmp_path / "rendezvous"}
    if data is not None:
        settings.update(HVDLM_DATA=data, HVDLM_OUT=run, HVDLM_ARGS=" ".join(args))
    return "--export=ALL," + ",".join(f"{k}={v}" for k, v in settings.items())


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.pt"))


def final_model(run: Path, step: int) -> dict[str, torch.Tensor]:
    path = run / "checkpoints" / f"step-{step:08d}.pt"
    return torch.load(path, weights_only=True)["model"]


def test_two_rank_job_completes(slurm_cluster, byte_dataset, tmp_path):
    """The argument form (`sbatch train.sbatch --data D --out R overrides...`, a value with a
    space in it) and the default --output, in the submission folder (no logs/ made first)."""
    started = time.monotonic()
    run = tmp_path / "run"
    job = slurm_cluster.sbatch(
        "--wait", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=5",
        export(None, None, [], tmp_path), SCRIPT, "--data", byte_dataset, "--out", run, *TINY,
        "train.max_steps=12", "train.wandb_name=a name with spaces", cwd=tmp_path, timeout=300)
    out = tmp_path / f"hvdlm-train-{job}.out"
    assert slurm_cluster.wait(job, timeout=60) == "COMPLETED", out.read_text()
    assert 'wandb_name = "a name with spaces"' in (run / "config.toml").read_text()
    assert [r["step"] for r in logged_steps(run)] == list(range(1, 13))
    log = (run / "log.txt").read_text()
    assert "world size 2" in log and "finished: step 12 of 12" in log
    assert checkpoint_steps(run) == [12]
    # The .out is a file: one readable line per log interval, no carriage-return frames.
    text = out.read_text()
    assert "\r" not in text
    assert [int(n) for n in re.findall(r"step (\d+)/12 \| epoch [\d.]+ \| loss", text)] == \
        list(range(1, 13))
    print(f"wall time {time.monotonic() - started:.1f} s")


def test_missing_out_is_one_line_and_fails(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    job = slurm_cluster.sbatch("--wait", "-n1", "--time=1", "--output", out,
                               f"--export=ALL,HVDLM_DATA={tmp_path}", SCRIPT, timeout=120)
    assert slurm_cluster.wait(job, timeout=60) == "FAILED"
    assert out.read_text().strip() == ("train.sbatch: error: no run folder: give --out DIR (or "
                                       "HVDLM_OUT); e.g. sbatch slurm/train.sbatch --data data "
                                       "--out runs/x")


def test_usr1_checkpoints_requeues_and_resumes_exactly(slurm_cluster, byte_dataset, tmp_path):
    """No periodic checkpoint is due (ckpt_interval > max_steps): the only way to the last step
    with the right parameters is the checkpoint written on USR1, then the requeued run. Rank 0
    pauses after step 3 until the signal reaches it (HVDLM_FAULT_PAUSE), so the signal always
    finds the run there, on any machine, and the ranks stop after step 4."""
    started = time.monotonic()
    steps = 12
    args = [*TINY, f"train.max_steps={steps}", "train.ckpt_interval=100000",
            "train.eval_interval=100000"]
    run, out = tmp_path / "preempted", tmp_path / "job.out"
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                               "--time=10", "--output", out,
                               export(byte_dataset, run, args, tmp_path)
                               + ",HVDLM_FAULT_PAUSE=0:3", SCRIPT)
    slurm_cluster.wait_for(lambda: len(logged_steps(run)) >= 3, 180,
                           f"job {job} to log 3 steps", interval=0.1)
    slurm_cluster.scancel("--batch", "--signal=USR1", job)
    slurm_cluster.wait_for(lambda: slurm_cluster.restart_count(job) >= 1, 120,
                           f"job {job} to be requeued")
    stopped_at = checkpoint_steps(run)
    assert stopped_at == [4], (stopped_at, out.read_text())

    # The uninterrupted reference, while the requeued job waits to start again.
    reference = tmp_path / "reference"
    horovodrun(2, sys.executable, "-m", "hvdlm.train", "--data", byte_dataset,
               "--out", reference, *args, timeout=240)

    assert slurm_cluster.wait(job, timeout=240) == "COMPLETED", out.read_text()
    assert slurm_cluster.restart_count(job) == 1
    starts = read_starts(run)  # RUN/env.json: the first start and the requeued one
    assert [(s["slurm_job_id"], s["slurm_restart_count"]) for s in starts] == [(job, 0), (job, 1)]
    assert all(s["world_size"] == 2 and len(s["hosts"]) == 2 for s in starts)
    records = logged_steps(run)
    assert [r.get("resumed_from") for r in records if "resumed_from" in r] == stopped_at
    assert records[-1]["step"] == steps
    assert checkpoint_steps(run) == [stopped_at[0], steps]
    text = out.read_text()
    assert "requeued" in text and f"finished: step {steps} of {steps}" in \
        (run / "log.txt").read_text()

    mine, theirs = final_model(run, steps), final_model(reference, steps)
    assert mine.keys() == theirs.keys()
    unequal = [k for k in mine if not torch.equal(mine[k], theirs[k])]
    assert not unequal, f"parameters differ from the uninterrupted run: {unequal}"
    print(f"stopped at step {stopped_at[0]}; wall time {time.monotonic() - started:.1f} s")


def test_max_requeues_0_checkpoints_and_ends_without_requeue(slurm_cluster, byte_dataset,
                                                              tmp_path):
    """The cap hvdlm.submit honours, honoured by train.sbatch too: past it a USR1 still gets its
    checkpoint, and the job ends with status 75 saying so instead of requeueing."""
    args = [*TINY, "train.max_steps=12", "train.ckpt_interval=100000",
            "train.eval_interval=100000"]
    run, out = tmp_path / "capped", tmp_path / "job.out"
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                               "--time=10", "--output", out,
                               export(None, None, [], tmp_path) + ",HVDLM_FAULT_PAUSE=0:2",
                               SCRIPT, "--data", byte_dataset, "--out", run,
                               "--max-requeues", "0", *args)
    slurm_cluster.wait_for(lambda: len(logged_steps(run)) >= 2, 180,
                           f"job {job} to log 2 steps", interval=0.1)
    slurm_cluster.scancel("--batch", "--signal=USR1", job)
    assert slurm_cluster.wait(job, timeout=120) == "FAILED", out.read_text()
    assert slurm_cluster.restart_count(job) == 0
    assert checkpoint_steps(run) == [3]
    assert "train.sbatch: not requeued: --max-requeues 0 reached" in out.read_text()


def test_dead_rank_fails_the_job_fast(slurm_cluster, byte_dataset, tmp_path):
    """kill -9 of rank 1 (fault injection): --kill-on-bad-exit ends rank 0 at once instead of
    leaving it in an allreduce; the job fails naming the task, and is not requeued."""
    run, out = tmp_path / "run", tmp_path / "job.out"
    args = [*TINY, "train.max_steps=100000", "train.ckpt_interval=100000"]
    job = slurm_cluster.sbatch("--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                               "--time=5", "--output", out,
                               export(byte_dataset, run, args, tmp_path)
                               + ",HVDLM_FAULT_KILL=1:3", SCRIPT)
    slurm_cluster.wait_for(lambda: len(logged_steps(run)) >= 2, 180, f"job {job} to train")
    killed = time.monotonic()
    assert slurm_cluster.wait(job, timeout=60) == "FAILED", out.read_text()
    print(f"job ended {time.monotonic() - killed:.1f} s after its second step")
    assert "task 1: Exited with exit code 137" in out.read_text()
    assert slurm_cluster.restart_count(job) == 0
