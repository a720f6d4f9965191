"""What a run leaves for people and tools: readable log lines (no progress frames off a
terminal), RUN/env.json with one entry per start, a self-contained tokenizer, TensorBoard tags
and hyperparameters, and one W&B run across a resume.

    .venv/bin/python -m pytest tests/training/test_run_record.py
"""
from __future__ import annotations

import re
import shutil

import pytest

from hvdlm.training.record.files import read_starts
from tests.conftest import TINY_RUN, run_module


def _train(data, run, *extra, env=None):
    return run_module("hvdlm.train", "--data", data, "--out", run, *TINY_RUN, *extra, env=env,
                      check=True, timeout=240)


def test_lines_not_frames_env_per_start_and_a_self_contained_run(byte_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(byte_dataset, data)
    run = tmp_path / "run"
    first = _train(data, run, "train.max_steps=2", env={"SLURM_JOB_ID": "77",
                                                        "SLURM_RESTART_COUNT": "0"})
    # stderr is a pipe here, as under sbatch: one line per log interval, no \r frames.
    assert "\r" not in first.stderr
    lines = re.findall(r"step (\d+)/2 \| epoch [\d.]+ \| loss [\d.]+ \| lr [\d.e+-]+ \| "
                       r"[\d.]+k? tok/s \| eta ", first.stderr)
    assert lines == ["1", "2"]
    assert len(re.findall(r"step \d+/2 \| epoch [\d.]+ \| loss",
                          (run / "log.txt").read_text())) == 2

    _train(data, run, "train.max_steps=4", env={"SLURM_JOB_ID": "77",
                                                "SLURM_RESTART_COUNT": "1"})
    starts = read_starts(run)
    assert [(s["slurm_job_id"], s["slurm_restart_count"]) for s in starts] == [("77", 0),
                                                                              ("77", 1)]
    assert [s["config"]["train"]["max_steps"] for s in starts] == [2, 4]
    assert starts[1]["world_size"] == 1 and starts[1]["hosts"] and starts[1]["torch"]
    assert "max_steps = 4" in (run / "config.toml").read_text()

    data.rename(tmp_path / "moved")  # the run still generates with its own tokenizer copy
    text = run_module("hvdlm.generate", "--run", run, "--prompt", "def ", "--max-new-tokens",
                      "8", check=True).stdout
    assert text.startswith("def ")


def test_tensorboard_tags_and_hyperparameters(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tiny_run / "tb"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/tokens_per_s", "val/loss",
            "val/bits_per_byte"} <= scalars
    assert not {"loss", "val_loss"} & scalars
    plugins = events.PluginTagToContent("hparams")
    assert plugins and "model.n_embd" in next(iter(plugins.values())).decode(errors="replace")


def test_wandb_offline_keeps_one_run_across_a_resume(byte_dataset, tmp_path):
    pytest.importorskip("wandb", reason="wandb is a dev dependency")
    run = tmp_path / "run"
    opts = ["train.wandb_project=hvdlm-test", "train.wandb_mode=offline"]
    env = {"WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true"}
    _train(byte_dataset, run, "train.max_steps=2", *opts, env=env)
    _train(byte_dataset, run, "train.max_steps=4", *opts, env=env)  # resumes from step 2
    run_id = (run / "wandb_id.txt").read_text().strip()
    folders = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(name.endswith("-" + run_id) for name in folders)
