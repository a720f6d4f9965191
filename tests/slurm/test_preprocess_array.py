"""slurm/preprocess.sh on the real local cluster: tokenizer job -> 3-task array -> merge job
gives a dataset byte-identical to one `python -m hvdlm.preprocess` process.

    sudo .venv/bin/python -m pytest tests/slurm/test_preprocess_array.py -v
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_module, small_corpus

pytestmark = pytest.mark.slurm

OPTIONS = ["--tokenizer", "bpe", "--vocab-size", "300", "--shard-tokens", "40000",
           "--val-fraction", "0.2", "--seed", "1"]


def dataset_files(root: Path) -> dict[str, bytes]:
    """Every file of a dataset except the report (it holds timings)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "preprocess_report.json"}


def test_array_job_equals_single_process(slurm_cluster, tmp_path):
    started = time.monotonic()
    corpus = small_corpus(tmp_path / "corpus")
    env = {**os.environ, "HVDLM_INPUT": str(corpus), "HVDLM_OUT": str(tmp_path / "array"),
           "HVDLM_NUM_TASKS": "3", "HVDLM_PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
           "HVDLM_PREPROCESS_ARGS": " ".join(OPTIONS)}
    # One CPU per task: two array tasks run at once on this 2-core node.
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "preprocess.sh"), "--cpus-per-task=1",
                           "--time=5"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    jobs = dict(item.split("=") for item in proc.stdout.split())
    assert set(jobs) == {"tokenizer", "tasks", "merge"}, proc.stdout

    # The single-process reference, while the chain runs.
    run_module("hvdlm.preprocess", corpus, "--out", tmp_path / "single", *OPTIONS,
               check=True, timeout=240)

    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.out")))
    assert slurm_cluster.wait(jobs["merge"], timeout=240) == "COMPLETED", logs
    assert slurm_cluster.wait(jobs["tokenizer"], timeout=60) == "COMPLETED"
    # Accounting can lag behind the merge's start: wait for every array task's record.
    assert slurm_cluster.wait(jobs["tasks"], timeout=60) == "COMPLETED"
    assert slurm_cluster.sacct_states(jobs["tasks"]) == \
        {f"{jobs['tasks']}_{i}": "COMPLETED" for i in range(3)}

    array, single = dataset_files(tmp_path / "array"), dataset_files(tmp_path / "single")
    assert "manifest.json" in single and any(name.endswith(".h5") for name in single)
    assert sorted(array) == sorted(single)
    differ = [name for name in single if array[name] != single[name]]
    assert not differ, f"array and single-process datasets differ in {differ}"
    print(f"wall time {time.monotonic() - started:.1f} s")
