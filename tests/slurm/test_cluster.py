"""The local Slurm cluster behaves like a real one: multi-task jobs, arrays, accounting,
signals to the batch script and requeue. Later Slurm tests rely on exactly these."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


def test_two_task_job_completes_in_sacct(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    job = slurm_cluster.sbatch("--wait", "-n2", "-t", "2", "-o", out, "--chdir", tmp_path,
                               "--wrap", "srun hostname")
    assert slurm_cluster.wait(job, timeout=60) == "COMPLETED"
    lines = out.read_text().split()
    assert len(lines) == 2 and len(set(lines)) == 1, out.read_text()


def test_failing_job_is_failed_in_sacct(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch("-n1", "-t", "1", "-o", tmp_path / "job.out", "--wrap", "exit 3")
    assert slurm_cluster.wait(job, timeout=60) == "FAILED"


def test_array_job_tasks_all_complete(slurm_cluster, tmp_path):
    job = slurm_cluster.sbatch("--array=0-2", "-n1", "-t", "2", "--chdir", tmp_path,
                               "-o", tmp_path / "%A_%a.out",
                               "--wrap", "echo $SLURM_ARRAY_TASK_ID > task-$SLURM_ARRAY_TASK_ID.txt")
    assert slurm_cluster.wait(job, timeout=120) == "COMPLETED"
    states = slurm_cluster.sacct_states(job)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(3)}, states
    for i in range(3):
        assert (tmp_path / f"task-{i}.txt").read_text().strip() == str(i)


def test_usr1_reaches_batch_script(slurm_cluster, tmp_path):
    script = write_script(tmp_path / "trap.sh", f"""
        trap 'echo got USR1 > {tmp_path}/marker; exit 0' USR1
        touch {tmp_path}/started
        for i in $(seq 300); do sleep 1 & wait $!; done
        exit 3
        """)
    job = slurm_cluster.sbatch("-n1", "-t", "10", "-o", tmp_path / "job.out", script)
    slurm_cluster.wait_for(lambda: (tmp_path / "started").exists(), 60, f"job {job} to start")
    slurm_cluster.scancel("--batch", "--signal=USR1", job)
    assert slurm_cluster.wait(job, timeout=60) == "COMPLETED"
    assert (tmp_path / "marker").read_text().strip() == "got USR1"


def test_requeued_job_runs_twice(slurm_cluster, tmp_path):
    runs = tmp_path / "runs.txt"
    script = write_script(tmp_path / "requeue.sh", f"""
        echo "run ${{SLURM_RESTART_COUNT:-0}}" >> {runs}
        if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then
            touch {tmp_path}/started
            sleep 300
        fi
        exit 0
        """)
    job = slurm_cluster.sbatch("--requeue", "-n1", "-t", "10", "--open-mode=append",
                               "-o", tmp_path / "job.out", script)
    slurm_cluster.wait_for(lambda: (tmp_path / "started").exists(), 60, f"job {job} to start")
    slurm_cluster.scontrol("requeue", job)
    assert slurm_cluster.wait(job, timeout=300) == "COMPLETED"
    assert runs.read_text().split("\n")[:2] == ["run 0", "run 1"], runs.read_text()
    assert slurm_cluster.restart_count(job) == 1
