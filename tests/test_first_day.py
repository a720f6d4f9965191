"""A new user's first day (issue 33): resuming with only --out, --data and what changes, the
warnings a changed setting gives, and folders that refuse the wrong command.

    .venv/bin/python -m pytest tests/test_first_day.py
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvdlm import cli
from hvdlm.config import TrainConfig
from hvdlm.training import checkpoint, resume_notes
from hvdlm.training.optim import lr_at
from tests.conftest import (ROOT, TINY_RUN, horovodrun, run_module, small_corpus,
                            trained_run)

# TINY_RUN with a model of its own shape, not the defaults: a resume that forgot the run's
# config would build another model and be refused.
SHAPE = ["model.n_layer=2", "model.n_embd=24", "model.n_head=3"]
RUN = [*TINY_RUN, *SHAPE, "train.ckpt_interval=2", "train.lr=1e-2", "train.min_lr=1e-3"]


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def trained(byte_dataset, tmp_path_factory) -> Path:
    return trained_run(byte_dataset, tmp_path_factory.mktemp("first_day"), *RUN)


def test_resume_needs_only_out_and_data(trained, byte_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    proc = run_module("hvdlm.train", "--out", run, "--resume", "auto", "--data", byte_dataset,
                      "train.max_steps=6", timeout=240)
    assert proc.returncode == 0, proc.stderr
    state = checkpoint.load(checkpoint.list_checkpoints(run)[-1])
    assert state.step == 6
    assert (state.config["model"]["n_layer"], state.config["model"]["n_embd"]) == (2, 24)
    assert state.config["train"]["lr"] == 1e-2  # the run's own, not the default 3e-3
    log = (run / "log.txt").read_text()
    assert "resumed from" in log and "step 4, 16 samples consumed" in log


def test_each_changed_setting_is_a_warning_with_old_and_new(trained, byte_dataset, tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(trained, run)
    shutil.copytree(byte_dataset, data)  # the same tokenizer, another folder
    proc = run_module("hvdlm.train", "--out", run, "--data", data, "train.max_steps=8",
                      "train.micro_batch=2", "train.seed=7", "train.log_interval=2",
                      timeout=240)
    assert proc.returncode == 0, proc.stderr
    old = TrainConfig(max_steps=4, warmup_steps=0, lr=1e-2, min_lr=1e-3)
    new = TrainConfig(max_steps=8, warmup_steps=0, lr=1e-2, min_lr=1e-3)
    rate = f"rises from {lr_at(4, old):.1e} to {lr_at(4, new):.1e}"
    expected = [
        "train.max_steps 4 -> 8: the cosine schedule now ends at 8: the learning rate at step 4 "
        + rate + " (to keep the old decay: train.schedule_steps=4)",
        "train.micro_batch 4 -> 2: the global batch changes from 4 to 2 windows a step",
        "set train.global_batch=4 to keep it",
        "train.seed 1337 -> 7: the order of the remaining samples",
        f"data {byte_dataset.resolve()} -> {data.resolve()}: the run goes on",
    ]
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    for text in expected:
        assert any(text in line for line in warnings), (text, proc.stderr)
    log = (run / "log.txt").read_text()
    assert all(text in log for text in expected)
    assert "train.log_interval" not in proc.stderr  # changes nothing of the optimisation


def test_schedule_notes_name_the_learning_rate_and_the_way_to_keep_the_decay():
    old = TrainConfig(max_steps=100)
    assert resume_notes.schedule(old, TrainConfig(max_steps=150), 100) == [
        f"train.max_steps 100 -> 150: the cosine schedule now ends at 150: the learning rate "
        f"at step 100 rises from {lr_at(100, old):.1e} to "
        f"{lr_at(100, TrainConfig(max_steps=150)):.1e} (to keep the old decay: "
        "train.schedule_steps=100)"]
    kept = TrainConfig(max_steps=150, schedule_steps=100)
    assert lr_at(100, kept) == lr_at(149, kept) == old.min_lr  # runs on at min_lr
    assert resume_notes.schedule(old, kept, 100) == [
        "train.max_steps 100 -> 150, train.schedule_steps 0 -> 100: the learning rate at step "
        f"100 stays {old.min_lr:.1e}"]
    assert resume_notes.schedule(old, TrainConfig(max_steps=100), 50) == []


def test_world_size_notes():
    t = TrainConfig(micro_batch=8, grad_accum=1)
    assert resume_notes.batch(t, 2, t, 1) == [
        "world size 2 -> 1: the global batch changes from 16 to 8 windows a step (gradients "
        "average over another number of samples; set train.global_batch=16 to keep it on any "
        "number of ranks)"]
    kept = TrainConfig(micro_batch=8, grad_accum=2, global_batch=16)
    assert resume_notes.batch(TrainConfig(micro_batch=8, global_batch=16), 2, kept, 1) == [
        "world size 2 -> 1: the global batch stays 16 (train.grad_accum 1 -> 2)"]
    assert resume_notes.batch(t, 1, t, 1) == []


def test_training_into_a_dataset_is_refused_and_leaves_it_unchanged(byte_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(byte_dataset, data)
    before = tree(data)
    proc = run_module("hvdlm.train", "--data", data, "--out", data, *TINY_RUN, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"hvdlm.train: error: --out {data}: a dataset folder (it has manifest.json); "
        "hvdlm.train writes a run folder of its own: give another --out"]
    assert tree(data) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_preprocessing_into_a_run_is_refused_and_leaves_it_unchanged(trained, tmp_path,
                                                                    overwrite):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = tree(run)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("some text\n")
    proc = run_module("hvdlm.preprocess", corpus, "--out", run, "--tokenizer", "byte",
                      *overwrite, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"--out {run}: a run folder (it has env.json)" in proc.stderr
    assert tree(run) == before


def test_evaluate_table_and_json_give_the_same_numbers(tiny_run, byte_dataset):
    shown = run_module("hvdlm.evaluate", "--run", tiny_run, "--data", byte_dataset, check=True,
                       timeout=240).stdout
    scores = json.loads(run_module("hvdlm.evaluate", "--run", tiny_run, "--data", byte_dataset,
                                   "--json", check=True, timeout=240).stdout)
    rows = dict(line.split(None, 1) if not line.startswith("bits per byte")
                else ("bits_per_byte", line[len("bits per byte"):].strip())
                for line in shown.splitlines())
    assert rows["scored"] == (f"{scores['checkpoint']} (step {scores['step']}) on the val split "
                              f"of {byte_dataset}")
    assert rows["loss"] == f"{scores['loss']:.4f} nats/token"
    assert rows["perplexity"] == f"{scores['perplexity']:.2f}"
    assert rows["bits_per_byte"] == f"{scores['bits_per_byte']:.4f}"
    assert rows["accuracy"] == f"{scores['accuracy']:.4f}"
    assert rows["tokens"] == f"{scores['tokens']:,}"


def test_preprocessing_writes_lines_not_carriage_returns_to_a_file(tmp_path):
    corpus = small_corpus(tmp_path / "corpus", n_files=4)
    with open(tmp_path / "stderr.txt", "w+") as err:  # stderr a file, as in a Slurm job
        subprocess.run([sys.executable, "-m", "hvdlm.preprocess", str(corpus), "--out",
                        str(tmp_path / "data"), "--tokenizer", "byte", "--workers", "1"],
                       stderr=err, stdout=subprocess.DEVNULL, check=True, timeout=240, cwd=ROOT)
        err.seek(0)
        written = err.read()
    assert "\r" not in written
    assert "B of " in written, written  # the lines took the bar's place


def test_export_overwrite_replaces_only_a_model_folder(tiny_run, tmp_path):
    out = tmp_path / "hf"
    run_module("hvdlm.export", "--run", tiny_run, "--out", out, check=True, timeout=120)
    again = run_module("hvdlm.export", "--run", tiny_run, "--out", out, timeout=120)
    assert again.returncode == 1 and again.stderr.splitlines() == [
        f"hvdlm.export: error: {out}: already exists (use --overwrite to replace it)"]
    (out / "config.json").write_text("{}")  # replaced below by a whole new export
    run_module("hvdlm.export", "--run", tiny_run, "--out", out, "--overwrite", check=True,
               timeout=120)
    assert (out / "config.json").read_text() != "{}"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    refused = run_module("hvdlm.export", "--run", tiny_run, "--out", other, "--overwrite",
                         timeout=120)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert "not a model folder (no model.safetensors)" in refused.stderr
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


def test_a_local_submission_makes_no_folder_named_after_a_placeholder(tmp_path):
    from hvdlm.cluster.submit import Resources, make_executor
    job = make_executor("local", tmp_path / "logs" / "%j", Resources(time_min=2)).submit(
        print, "hello")
    job.result()
    made = [p.relative_to(tmp_path) for p in tmp_path.rglob("*")]
    assert not [p for p in made if "%" in str(p)], made
    assert "hello" in job.stdout()


@pytest.mark.horovod
def test_under_horovodrun_a_mistake_is_one_line_from_rank_0(byte_dataset, tmp_path):
    proc = horovodrun(2, sys.executable, "-m", "hvdlm.train", "--data", tmp_path / "nodata",
                      "--out", tmp_path / "run", timeout=120, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "hvdlm.train: error:" in line]
    assert errors == [f"[0]<stderr>:hvdlm.train: error: {tmp_path / 'nodata'}/manifest.json: "
                      "no such file (not a preprocessed dataset?)"], proc.stderr


def test_another_rank_that_fails_alone_still_says_why(tmp_path):
    started = time.monotonic()
    proc = run_module("hvdlm.evaluate", "--no-such-option", env={"HOROVOD_RANK": "1"},
                      timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("hvdlm.evaluate: error:")
    assert time.monotonic() - started >= cli.QUIET_SECONDS  # after rank 0 had its say


def test_epochs_are_logged_and_a_warning_comes_once_past_ten(caplog):
    from hvdlm.training.record.progress import Progress, format_line
    record = {"step": 40, "loss": 1.0, "lr": 1e-3, "tokens_per_s": 10.0, "epoch": 2.5}
    assert format_line(record, 100, 0.1).startswith("step 40/100 | epoch 2.50 | loss 1.0000")
    progress = Progress("lines", 100, 0, enabled=True)
    for step, epoch in ((50, 9.9), (60, 10.2), (70, 12.0)):
        progress.report({**record, "step": step, "epoch": epoch}, 0.1)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == ["step 60: 10.2 passes over the train split (more than 10 epochs): the "
                      "model may be memorising it; a larger corpus or fewer steps would "
                      "generalise better"]


def test_a_changed_model_shape_is_refused_naming_old_and_new(trained, byte_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = tree(run)
    proc = run_module("hvdlm.train", "--out", run, "--data", byte_dataset, "model.n_layer=3",
                      "train.max_steps=6", timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "checkpoint model differs from the config in model.n_layer 2 -> 3; a model's shape " \
           "cannot change on resume" in proc.stderr
    assert {k: v for k, v in tree(run).items() if k != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}
