"""One jsonl split into pieces (--piece-bytes) across a 3-task array job on the real local
Slurm (slurm/preprocess.sh) gives the dataset of one unsplit `python -m hvdlm.preprocess`
process, byte for byte.

    sudo .venv/bin/python -m pytest tests/slurm/test_preprocess_split.py -v
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_module
from tests.test_preprocess import files_of
from tests.test_preprocess_formats import OPTIONS, SPLIT, big_jsonl

pytestmark = pytest.mark.slurm


def test_split_file_over_array_tasks_equals_unsplit_single_process(slurm_cluster, tmp_path):
    corpus = big_jsonl(tmp_path / "big.jsonl")
    env = {**os.environ, "HVDLM_INPUT": str(corpus), "HVDLM_OUT": str(tmp_path / "array"),
           "HVDLM_NUM_TASKS": "3", "HVDLM_PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
           "HVDLM_PREPROCESS_ARGS": " ".join(OPTIONS + SPLIT)}
    proc = subprocess.run(["bash", str(ROOT / "slurm" / "preprocess.sh"), "--cpus-per-task=1",
                           "--time=5"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    jobs = dict(item.split("=") for item in proc.stdout.split())

    # The unsplit single-process reference, while the chain runs.
    run_module("hvdlm.preprocess", corpus, "--out", tmp_path / "single", *OPTIONS,
               "--piece-bytes", str(1 << 30), check=True, timeout=240)

    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.out")))
    assert slurm_cluster.wait(jobs["merge"], timeout=240) == "COMPLETED", logs
    assert slurm_cluster.wait(jobs["tasks"], timeout=60) == "COMPLETED"
    array, single = files_of(tmp_path / "array"), files_of(tmp_path / "single")
    assert any(name.endswith(".h5") for name in single)
    assert array == single
    # Every array task encoded a share of the one file (about a third each).
    report = json.loads((tmp_path / "array" / "preprocess_report.json").read_text())
    assert [t["task"] for t in report["tasks"]] == [0, 1, 2]
    assert report["files"] == 1 and report["options"]["piece_bytes"] == 1_000_000
