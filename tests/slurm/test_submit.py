"""hvdlm.submit (submitit): 2-rank runs on the local Slurm cluster and on this machine, a dead
rank named, a preempted job (submitit's USR2) checkpointed, requeued and resumed.

    sudo .venv/bin/python -m pytest tests/slurm/test_submit.py -v
"""
from __future__ import annotations

import os
import pickle
import re
import sys
import time
from pathlib import Path

import pytest

from hvdlm.cluster.slurm_options import sbatch_options, slurm_minutes
from hvdlm.cluster.submit import TrainRank, submit_training, wait_for_ranks, with_resume_auto
from hvdlm.errors import HvdlmError, UsageError
from tests.conftest import ROOT, logged_steps, run_module

TINY = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.seq_len=32",
        "train.warmup_steps=0", "train.log_interval=1", "train.micro_batch=8",
        "train.eval_batches=1"]


@pytest.fixture
def job_env(tmp_path, monkeypatch) -> dict[str, str]:
    """What the jobs inherit: hvdlm importable from any folder, a private rendezvous dir."""
    env = {"PYTHONPATH": str(ROOT), "HVDLM_RENDEZVOUS_DIR": str(tmp_path / "rendezvous")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def submit_cli(cluster: str, data: Path, run: Path, tmp_path: Path, env: dict,
               *train: str, options: tuple[str, ...] = ("--time", "5")) -> tuple[str, object]:
    started = time.monotonic()
    proc = run_module("hvdlm.submit", "--cluster", cluster, "--nodes", "1",
                      "--ntasks-per-node", "2", *options, "--folder", tmp_path / "jobs" / "%j",
                      "--wait", "--wait-timeout", "240", "--", "--data", data, "--out", run,
                      *TINY, *train, env=env, timeout=300)
    print(f"{cluster}: wall time {time.monotonic() - started:.1f} s")
    match = re.search(r"job (\S+) submitted", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return match.group(1), proc


@pytest.mark.slurm
@pytest.mark.horovod
def test_cli_two_ranks_on_slurm(slurm_cluster, byte_dataset, tmp_path, job_env):
    """With sbatch options passed through (the node has the feature `hvdlm`), a time limit in
    sbatch's format and a setup line that leaves a file with a space in its name."""
    run, marker = tmp_path / "run", tmp_path / "set up"
    options = ("--time", "0:07:30", "--slurm", "constraint=hvdlm", "--slurm", "mem=300M",
               "--slurm", "comment=hvdlm test", "--setup", f"echo ran > '{marker}'")
    job, proc = submit_cli("slurm", byte_dataset, run, tmp_path, job_env, "train.max_steps=8",
                           options=options)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"job {job} finished: 2 ranks succeeded" in proc.stdout
    assert f"{tmp_path}/jobs/{job}/{job}_1_log.err" in proc.stdout  # every rank's logs listed
    assert slurm_cluster.wait(job, timeout=60) == "COMPLETED"
    shown = slurm_cluster.scontrol("show", "job", job)
    for field in ("Features=hvdlm", "MinMemoryNode=300M", "TimeLimit=00:08:00",
                  "Comment=hvdlm test"):
        assert field in shown, shown
    assert marker.read_text() == "ran\n"
    log = (run / "log.txt").read_text()
    assert "world size 2" in log and "finished: step 8 of 8" in log


@pytest.mark.horovod
def test_cli_two_ranks_local(byte_dataset, tmp_path, job_env):
    run = tmp_path / "run"
    job, proc = submit_cli("local", byte_dataset, run, tmp_path, job_env, "train.max_steps=8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"job {job} finished: 2 ranks succeeded" in proc.stdout
    log = (run / "log.txt").read_text()
    assert "world size 2" in log and "finished: step 8 of 8" in log


@pytest.mark.slurm
@pytest.mark.horovod
def test_dead_rank_is_named_and_exits_nonzero(slurm_cluster, byte_dataset, tmp_path, job_env):
    env = {**job_env, "HVDLM_FAULT_KILL": "1:3"}
    job, proc = submit_cli("slurm", byte_dataset, tmp_path / "run", tmp_path, env,
                           "train.max_steps=8")
    assert proc.returncode == 1
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"hvdlm.submit: error: job {job} failed: rank 1: hvdlm.train was "
                            "killed by SIGKILL (status 137)"), proc.stderr
    assert slurm_cluster.wait(job, timeout=60) == "FAILED"


@pytest.mark.slurm
@pytest.mark.horovod
def test_preempted_job_checkpoints_requeues_and_resumes(slurm_cluster, byte_dataset, tmp_path,
                                                         job_env, monkeypatch):
    """Submitit's preemption signal (USR2 to every process of the step, as Slurm sends it before
    the time limit): rank 0's checkpoint() stops the ranks after a checkpoint, submitit
    requeues, the requeued ranks resume with --resume auto and finish. Rank 0 pauses after
    step 3 until checkpoint() asks it to stop (HVDLM_FAULT_PAUSE): no race with a fast run."""
    started = time.monotonic()
    steps, run = 12, tmp_path / "run"
    monkeypatch.setenv("HVDLM_FAULT_PAUSE", "0:3")  # the job inherits it
    args = ["--data", str(byte_dataset), "--out", str(run), *TINY, f"train.max_steps={steps}",
            "train.ckpt_interval=100000", "train.eval_interval=100000"]
    job = submit_training(args, cluster="slurm", ntasks_per_node=2, time=20,
                          folder=tmp_path / "jobs" / "%j")
    slurm_cluster.wait_for(lambda: len(logged_steps(run)) >= 3, 180,
                           f"job {job.job_id} to log 3 steps", interval=0.1)
    slurm_cluster.scancel("--signal=USR2", job.job_id)
    results = wait_for_ranks(job, timeout_s=300)
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert slurm_cluster.wait(job.job_id, timeout=60) == "COMPLETED"
    assert slurm_cluster.restart_count(job.job_id) == 1
    resumed = [r["resumed_from"] for r in logged_steps(run) if "resumed_from" in r]
    assert resumed == [4]
    assert logged_steps(run)[-1]["step"] == steps
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step-*.pt"))
    assert ckpts == [f"step-{resumed[0]:08d}.pt", f"step-{steps:08d}.pt"]
    print(f"stopped at step {resumed[0]}; wall time {time.monotonic() - started:.1f} s")


@pytest.mark.slurm
@pytest.mark.horovod
def test_max_requeues_0_checkpoints_and_ends_without_requeue(slurm_cluster, byte_dataset,
                                                              tmp_path, job_env, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("HVDLM_FAULT_PAUSE", "0:2")
    args = ["--data", str(byte_dataset), "--out", str(run), *TINY, "train.max_steps=12",
            "train.ckpt_interval=100000", "train.eval_interval=100000"]
    job = submit_training(args, ntasks_per_node=2, time="0:20:00", max_requeues=0,
                          folder=tmp_path / "jobs" / "%j")
    slurm_cluster.wait_for(lambda: len(logged_steps(run)) >= 2, 180,
                           f"job {job.job_id} to log 2 steps", interval=0.1)
    slurm_cluster.scancel("--signal=USR2", job.job_id)
    with pytest.raises(HvdlmError, match="not requeued: --max-requeues 0 reached"):
        wait_for_ranks(job, timeout_s=180)
    slurm_cluster.wait(job.job_id, timeout=60)
    assert slurm_cluster.restart_count(job.job_id) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*.pt")) == \
        ["step-00000003.pt"]


def test_each_requeue_counts_against_max_requeues():
    rank = TrainRank(["--data", "d"], max_requeues=2)
    for expected in (1, 2):
        rank = rank.checkpoint().function  # no child: nothing to stop
        assert rank.requeues == expected and rank.train_args[-2:] == ["--resume", "auto"]
        assert pickle.loads(pickle.dumps(rank)).requeues == expected
    assert rank.checkpoint() is None


def test_launch_options_reach_every_requeue():
    """--rendezvous-dir and --iface become hvdlm.launch's options, in the pickled callable and
    in each requeued one."""
    rank = TrainRank(["--data", "d"], python="py", launch_args=["--rendezvous-dir", "/shared/r",
                                                                 "--iface", "ib0"])
    for _ in range(2):
        assert rank.command() == ["py", "-m", "hvdlm.launch", "--rendezvous-dir", "/shared/r",
                                  "--iface", "ib0", "--", "py", "-m", "hvdlm.train",
                                  *rank.train_args]
        rank = pickle.loads(pickle.dumps(rank.checkpoint().function))
    assert TrainRank(["x"], python="py").command()[:4] == ["py", "-m", "hvdlm.launch", "--"]


def test_time_limits_in_sbatch_formats():
    assert [slurm_minutes(t) for t in ("45", "90:30", "2:00:00", "1-0", "1-12:30", "0-0:0:1")] \
        == [45, 91, 120, 1440, 2190, 1]
    for bad in ("1:2:3:4", "1h", "0"):
        with pytest.raises(UsageError, match="--time"):
            slurm_minutes(bad)
    with pytest.raises(UsageError, match="--slurm time: use --time"):
        sbatch_options(["time=5"])
    assert sbatch_options(["--qos=high", "exclusive"]) == {"qos": "high", "exclusive": True}


def test_no_slurm_is_one_line(tmp_path):
    env = {"PATH": str(Path(sys.executable).parent) + os.pathsep + "/nonexistent"}
    proc = run_module("hvdlm.submit", "--folder", tmp_path / "%j", "--", "--data", "d",
                      "--out", "r", env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("hvdlm.submit: error: no Slurm found (sbatch is not on PATH): "
                                   "run this on a Slurm login node, or use --cluster local")


def test_usage_errors_are_one_line(tmp_path):
    for argv, message in ((["--nodes", "2", "--cluster", "local", "--", "--data", "d"],
                           "--nodes must be 1"),
                          (["--cluster", "local"], "give hvdlm.train's arguments after --"),
                          (["--tasks-per-node", "0", "--cluster", "local", "--", "x"],
                           "--ntasks-per-node must be >= 1"),  # the old name still works
                          (["--cluster", "local", "--setup", "true", "--", "x"],
                           "--slurm and --setup are for --cluster slurm"),
                          (["--cluster", "local", "--time", "2h", "--", "x"], "--time '2h'")):
        proc = run_module("hvdlm.submit", "--folder", tmp_path / "%j", *argv, timeout=60)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert message in proc.stderr


def test_resubmission_forces_resume_auto():
    assert with_resume_auto(["--data", "d", "--resume", "never", "x=1"]) == \
        ["--data", "d", "x=1", "--resume", "auto"]
    assert with_resume_auto(["--resume=ckpt.pt", "--out", "r"]) == \
        ["--out", "r", "--resume", "auto"]


def test_wait_has_a_deadline():
    class NeverDone:
        job_id = "42"

        def done(self) -> bool:
            return False

    started = time.monotonic()
    with pytest.raises(HvdlmError, match="job 42 has not finished after 0.3 s; it keeps running"):
        wait_for_ranks(NeverDone(), timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - started < 5  # 0.3 s typical: a hang guard, not a speed bound
