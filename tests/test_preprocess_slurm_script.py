"""slurm/preprocess.sbatch and slurm/preprocess.sh without a cluster: the steps, run by hand
as Slurm would, equal a single run; the submit wrapper chains three sbatch calls.
(The real-cluster run is in tests/slurm/.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SBATCH = ROOT / "slurm" / "preprocess.sbatch"


PREPROCESS_ARGS = "--tokenizer byte --shard-tokens 900 --val-fraction 0.25"


def _step(env: dict, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SBATCH), *args], env={**env, **extra}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_sbatch_steps_equal_single_run(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(12):
        (tmp_path / "in" / f"{i}.md").write_text(f"# doc {i}\n" + "words " * (i * 40 + 1))
    env = {**os.environ, "HVDLM_INPUT": f"{tmp_path / 'in'}", "HVDLM_OUT": str(tmp_path / "a"),
           "HVDLM_NUM_TASKS": "3", "HVDLM_PYTHON": sys.executable,
           "HVDLM_PREPROCESS_ARGS": PREPROCESS_ARGS}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    steps = [dict(HVDLM_STEP="tokenizer")] + [dict(SLURM_ARRAY_TASK_ID=str(i)) for i in range(3)]
    for extra in steps + [dict(HVDLM_STEP="merge")]:
        proc = _step(env, **extra)
        assert proc.returncode == 0, proc.stderr
    # The whole run in one job, in the argument form (a folder name with a space).
    a, b = tmp_path / "a", tmp_path / "data b"
    single = {k: v for k, v in env.items() if k not in ("HVDLM_INPUT", "HVDLM_OUT")}
    proc = _step(single, str(tmp_path / "in"), "--out", str(b), *PREPROCESS_ARGS.split())
    assert proc.returncode == 0, proc.stderr
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    assert [p.read_bytes() for p in sorted(a.rglob("*.h5"))] == \
        [p.read_bytes() for p in sorted(b.rglob("*.h5"))]
    bad = _step(env, HVDLM_STEP="task")
    assert bad.returncode == 2 and "needs an array job" in bad.stderr


def _submit(tmp_path: Path, env: dict, *args: str) -> tuple[subprocess.CompletedProcess, list]:
    """slurm/preprocess.sh against a fake sbatch that records each call's arguments (JSON)."""
    fake, log = tmp_path / "bin", tmp_path / "calls"
    fake.mkdir(exist_ok=True)
    (fake / "sbatch").write_text(
        f'#!{sys.executable}\nimport json, sys\n'
        f'with open({str(log)!r}, "a") as log:\n    log.write(json.dumps(sys.argv[1:]) + "\\n")\n'
        f'print(f"{{100 + sum(1 for _ in open({str(log)!r}))}};cluster")\n')
    (fake / "sbatch").chmod(0o755)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HVDLM_")},
           "PATH": f"{fake}:{os.environ['PATH']}", **env}
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "preprocess.sh"), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def test_submit_wrapper_chains_dependencies(tmp_path):
    proc, calls = _submit(tmp_path, {"HVDLM_INPUT": "c", "HVDLM_OUT": "d",
                                     "HVDLM_NUM_TASKS": "5"}, "--partition=cpu")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tokenizer=101 tasks=102 merge=103"
    assert "--export=ALL,HVDLM_STEP=tokenizer" in calls[0] and "--partition=cpu" in calls[0]
    assert "--dependency=afterok:101" in calls[1] and "--array=0-4" in calls[1]
    assert "--dependency=afterok:102" in calls[2] and "--export=ALL,HVDLM_STEP=merge" in calls[2]
    assert not (tmp_path / "logs").exists()  # the outputs need no folder made first


def test_submit_wrapper_argument_form_keeps_each_word(tmp_path):
    args = ["my corpus/", "--out", "data set", "--dedup"]
    proc, calls = _submit(tmp_path, {}, "--tasks", "3", "--sbatch", "--account=a b", "--", *args)
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 3 and "--array=0-2" in calls[1]
    for call in calls:
        assert "--account=a b" in call and call[-len(args):] == args, call
    for bad, message in (([], "give hvdlm.preprocess's arguments after --"),
                         (["--tasks", "0", "--", "c"], "must be >= 1, not '0'"),
                         (["--nodes=2"], "unknown option '--nodes=2'")):
        proc, _ = _submit(tmp_path, {}, *bad)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
