"""Wrong launches refused before anything is written: several processes that Horovod does not
join (srun without hvdlm.launch, torchrun, an MPI that hvdlm's Horovod was not built with)
would each train alone into the same run folder.

The rules on the variables each launcher sets, then the real thing: `python -m hvdlm.train`
with srun's variables, under torchrun, and `srun -n 2` on the real local Slurm cluster.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvdlm.cluster.distributed import check_launch, launched_rank, launched_size
from hvdlm.errors import EXIT_USAGE, UsageError
from tests.conftest import ROOT

HINT = "python -m hvdlm.launch -- python -m hvdlm.train"
# What srun gives each task of `srun -n 2` (seen on the local cluster), and a batch script.
SRUN_TASK = {"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "0", "SLURM_STEPID": "0", "SLURM_PROCID": "1",
             "SLURM_LOCALID": "1", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2"}
BATCH_SCRIPT = {"SLURM_JOB_ID": "9", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
                "SLURM_NTASKS": "2"}
HOROVOD_RANK_ENV = {"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1",
                    "HOROVOD_LOCAL_SIZE": "2"}
LAUNCH_VARS = ("SLURM_", "HOROVOD_", "OMPI_", "PMI_", "PMIX_", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
               "RANK", "LOCAL_RANK")

REFUSED = [
    ("srun", SRUN_TASK, "srun started 2 tasks"),
    ("srun-ntasks-only", {**SRUN_TASK, "SLURM_STEP_NUM_TASKS": ""}, "srun started 2 tasks"),
    ("torchrun", {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_WORLD_SIZE": "4"},
     "torchrun (or another torch.distributed launcher) started 4 processes"),
    ("torchrun-one-node-of-two", {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1"}, "started 2"),
    ("openmpi", {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "0"},
     "an MPI launcher started 3 processes (OMPI_COMM_WORLD_SIZE)"),
    ("mpich", {"PMI_SIZE": "2", "PMI_RANK": "1"}, "started 2 processes (PMI_SIZE)"),
    ("pmix", {"PMIX_SIZE": "2", "PMIX_RANK": "1"}, "started 2 processes (PMIX_SIZE)"),
]
ACCEPTED = [
    ("nothing", {}),
    ("hvdlm.launch-under-srun", {**SRUN_TASK, **HOROVOD_RANK_ENV}),
    ("horovodrun", HOROVOD_RANK_ENV),
    ("srun-one-task", {**SRUN_TASK, "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1"}),
    ("batch-script", BATCH_SCRIPT),
    ("torchrun-one-process", {"WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "RANK": "0"}),
    ("mpirun-one-process", {"OMPI_COMM_WORLD_SIZE": "1"}),
    ("garbage", {"WORLD_SIZE": "many", "PMI_SIZE": "", "SLURM_STEP_NUM_TASKS": "x"}),
]


@pytest.mark.parametrize("name, env, words", REFUSED, ids=[c[0] for c in REFUSED])
def test_several_processes_without_a_horovod_world_are_refused(name, env, words):
    with pytest.raises(UsageError) as caught:
        check_launch(env, mpi_built=False)
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE == 2
    assert words in message and HINT in message and "horovodrun" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("name, env", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_one_process_or_a_horovod_world_is_accepted(name, env):
    check_launch(env, mpi_built=False)


def test_an_mpi_world_is_a_horovod_world_only_with_an_mpi_build():
    mpi = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}
    check_launch(mpi, mpi_built=True)
    check_launch({**SRUN_TASK, "PMIX_SIZE": "2", "PMIX_RANK": "1"}, mpi_built=True)
    with pytest.raises(UsageError):
        check_launch(mpi, mpi_built=False)
    # hvdlm's own build has no MPI: there such a world is 1 (and refused), not 2.
    assert launched_size(mpi) == 1 and launched_size(HOROVOD_RANK_ENV) == 2
    assert launched_rank(mpi) == 1 and launched_rank(HOROVOD_RANK_ENV) == 1
    assert launched_rank({}) == 0 and launched_rank({"PMI_RANK": "3"}) == 3


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCH_VARS)}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _train_args(data: Path, run: Path) -> list[str]:
    return ["-m", "hvdlm.train", "--data", str(data), "--out", str(run), "model.n_layer=1",
            "model.n_embd=16", "model.n_head=2", "model.seq_len=32", "train.max_steps=2"]


def test_train_with_srun_variables_exits_2_in_one_line_and_writes_nothing(byte_dataset,
                                                                          tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, *_train_args(byte_dataset, run)], cwd=ROOT,
                          env=_clean_env(**SRUN_TASK), capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("hvdlm.train: error: srun started 2 tasks") and HINT in lines[0]
    assert not run.exists()


def test_torchrun_is_refused_in_every_process(byte_dataset, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists(), "torch installs torchrun beside python"  # no silent skip in CI
    run = tmp_path / "run"
    proc = subprocess.run([str(torchrun), "--nproc-per-node=2", "--no-python", sys.executable,
                           *_train_args(byte_dataset, run)], cwd=ROOT, env=_clean_env(),
                          capture_output=True, text=True, timeout=180)
    ours = [ln for ln in proc.stderr.splitlines() if "hvdlm.train: error:" in ln]
    assert proc.returncode != 0 and len(ours) >= 1, proc.stderr
    assert all("torchrun" in ln and HINT in ln for ln in ours), ours
    assert "Traceback" not in "\n".join(ln for ln in proc.stderr.splitlines()
                                        if "hvdlm" in ln)
    assert not run.exists()


@pytest.mark.slurm
def test_srun_without_hvdlm_launch_exits_2_per_task_and_creates_no_run(slurm_cluster,
                                                                       byte_dataset, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(["srun", "-n", "2", "--cpus-per-task=1", "--time=2",
                           sys.executable, *_train_args(byte_dataset, run)],
                          cwd=ROOT, env=_clean_env(PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=240)
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("hvdlm.train")]
    others = [ln for ln in proc.stderr.splitlines()
              if ln.strip() and not ln.startswith(("hvdlm.train", "srun:"))]
    assert proc.returncode == 2, proc.stderr
    assert len(ours) == 2 and not others, proc.stderr  # one line per task, srun's own aside
    for line in ours:
        assert line.startswith("hvdlm.train: error: srun started 2 tasks without a Horovod "
                               "world") and HINT in line, line
    assert not run.exists()
