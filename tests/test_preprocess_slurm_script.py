"""slurm/preprocess.sbatch and slurm/preprocess.sh without a cluster: the steps, run by hand
as Slurm would, equal a single run; the submit wrapper chains three sbatch calls.
(The real-cluster run is in tests/slurm/.)"""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

SBATCH = ROOT / "slurm" / "preprocess.sbatch"


def _step(env: dict, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SBATCH)], env={**env, **extra}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_sbatch_steps_equal_single_run(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(12):
        (tmp_path / "in" / f"{i}.md").write_text(f"# doc {i}\n" + "words " * (i * 40 + 1))
    env = {**os.environ, "HVDLM_INPUT": f"{tmp_path / 'in'}", "HVDLM_OUT": str(tmp_path / "a"),
           "HVDLM_NUM_TASKS": "3", "HVDLM_PYTHON": sys.executable,
           "HVDLM_PREPROCESS_ARGS": "--tokenizer byte --shard-tokens 900 --val-fraction 0.25"}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    steps = [dict(HVDLM_STEP="tokenizer")] + [dict(SLURM_ARRAY_TASK_ID=str(i)) for i in range(3)]
    for extra in steps + [dict(HVDLM_STEP="merge")]:
        proc = _step(env, **extra)
        assert proc.returncode == 0, proc.stderr
    assert _step(env, HVDLM_OUT=str(tmp_path / "b")).returncode == 0  # whole run in one job
    a, b = tmp_path / "a", tmp_path / "b"
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    assert [p.read_bytes() for p in sorted(a.rglob("*.h5"))] == \
        [p.read_bytes() for p in sorted(b.rglob("*.h5"))]
    bad = _step(env, HVDLM_STEP="task")
    assert bad.returncode == 2 and "needs an array job" in bad.stderr


def test_submit_wrapper_chains_dependencies(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls"
    (fake / "sbatch").write_text(f'#!/bin/bash\necho "$*" >> {log}\n'
                                 f'echo $((100 + $(wc -l < {log})))";cluster"\n')
    (fake / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "HVDLM_INPUT": "c",
           "HVDLM_OUT": "d", "HVDLM_NUM_TASKS": "5"}
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "preprocess.sh"), "--partition=cpu"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tokenizer=101 tasks=102 merge=103"
    calls = log.read_text().splitlines()
    assert "HVDLM_STEP=tokenizer" in calls[0] and "--partition=cpu" in calls[0]
    assert "--dependency=afterok:101" in calls[1] and "--array=0-4" in calls[1]
    assert "--dependency=afterok:102" in calls[2] and "HVDLM_STEP=merge" in calls[2]
    assert (tmp_path / "logs").is_dir()
