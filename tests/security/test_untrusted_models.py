"""Model files from elsewhere: FIFOs and device links where a checkpoint, tokenizer.json,
config.json, model.safetensors, --config or explain --file is expected; a link to a secret;
checkpoints whose stored config is absurd or whose weights are NaN; crafted safetensors
headers. Each ends in a one-line refusal (exit 1 or 2) within 10 s and 512 MiB
(tests/security/hostile.py), with real FIFOs, real /dev/zero links and crafted files.

    .venv/bin/python -m pytest tests/security/test_untrusted_models.py
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_RUN, run_module
from tests.security.hostile import (crafted_run, newest_checkpoint, refused, train_victim_run,
                                    write_checkpoint)

pytestmark = pytest.mark.security

SECRET = b"hunter2-the-secret-of-the-user\n"


@pytest.fixture(scope="module")
def victim(byte_dataset, tmp_path_factory) -> dict[str, Path]:
    """A trained run, its export (a GPT-2 folder) and a secret file of the user."""
    home = tmp_path_factory.mktemp("models")
    train_victim_run(byte_dataset, home / "run")
    run_module("hvdlm.export", "--run", home / "run", "--out", home / "hf", check=True)
    (home / "secret").write_bytes(SECRET)
    return {"run": home / "run", "hf": home / "hf", "secret": home / "secret",
            "data": byte_dataset}


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".lock"))
    return dest


def _replace(path: Path, by: str) -> None:
    """`path` becomes a FIFO ("fifo") or a link to a device or file."""
    path.unlink()
    os.mkfifo(path) if by == "fifo" else path.symlink_to(by)


def _init_from(victim, folder: Path, tmp_path: Path) -> str:
    return refused("hvdlm.train", "--data", victim["data"], "--out", tmp_path / "new",
                   *TINY_RUN, f"train.init_from={folder}")


@pytest.mark.parametrize("target,by", [("tokenizer.json", "fifo"),
                                       ("tokenizer.json", "/dev/zero"),
                                       ("checkpoint", "fifo"), ("checkpoint", "/dev/urandom")])
def test_a_run_holding_endless_files_is_refused(victim, tmp_path, target, by):
    run = _copy(victim["run"], tmp_path / "run")
    path = newest_checkpoint(run) if target == "checkpoint" else run / target
    _replace(path, by)
    line = refused("hvdlm.generate", "--run", run, "--prompt", "x", "--max-new-tokens", "2")
    assert path.name in line and ("FIFO" in line or "device" in line), line
    line = refused("hvdlm.explain", "--run", run, "--text", "abc", "--out", tmp_path / "x")
    assert path.name in line, line


def test_given_files_that_never_end_are_refused(victim, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    for device in ("/dev/urandom", tmp_path / "fifo"):
        line = refused("hvdlm.generate", "--run", victim["run"], "--prompt", "x",
                       "--checkpoint", device)
        assert str(device) in line, line
        line = refused("hvdlm.explain", "--run", victim["run"], "--file", device,
                       "--out", tmp_path / "x")
        assert str(device) in line, line
        line = refused("hvdlm.train", "--data", victim["data"], "--out", tmp_path / "r",
                       "--config", device)
        assert str(device) in line, line
    line = refused("hvdlm.explain", "--run", victim["run"], "--file", "/dev/zero",
                   "--out", tmp_path / "x")
    assert "/dev/zero" in line, line


@pytest.mark.parametrize("target,by", [("config.json", "fifo"), ("config.json", "/dev/zero"),
                                       ("model.safetensors", "fifo"),
                                       ("model.safetensors", "/dev/zero")])
def test_a_model_folder_holding_endless_files_is_refused(victim, tmp_path, target, by):
    folder = _copy(victim["hf"], tmp_path / "hf")
    _replace(folder / target, by)
    line = _init_from(victim, folder, tmp_path)
    assert target in line, line


def test_a_link_to_a_secret_is_refused_without_showing_it(victim, tmp_path):
    folder = _copy(victim["hf"], tmp_path / "hf")
    _replace(folder / "model.safetensors", str(victim["secret"]))
    shown = [SECRET[:8].decode(), str(struct.unpack("<Q", SECRET[:8])[0]), "hunter"]
    line = _init_from(victim, folder, tmp_path)
    assert not any(s in line for s in shown), line
    run = _copy(victim["run"], tmp_path / "run")
    _replace(run / "tokenizer.json", str(victim["secret"]))
    line = refused("hvdlm.generate", "--run", run, "--prompt", "x")
    assert not any(s in line for s in shown), line


@pytest.mark.parametrize("key,value", [("n_layer", 10**6), ("seq_len", -5), ("vocab_size", 0),
                                       ("arch", "bogus"), ("n_head", 0), ("n_embd", 10**7)])
def test_a_checkpoints_config_is_checked_before_anything_is_built(victim, tmp_path, key, value):
    run = crafted_run(victim["run"], tmp_path / "run",
                      lambda state: state["config"]["model"].__setitem__(key, value))
    line = refused("hvdlm.generate", "--run", run, "--prompt", "x", "--max-new-tokens", "2")
    assert newest_checkpoint(run).name in line, line


def _safetensors(path: Path, header: bytes, body: bytes = b"") -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)


@pytest.mark.parametrize("header", [
    b"[" * 100_000 + b"]" * 100_000,                                       # deep nesting
    b'{"wte.weight": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}}',
    json.dumps({"wte.weight": {"dtype": "F32", "shape": [2] * 100_000,
                               "data_offsets": [0, 4]}}).encode(),           # 100k dimensions
    b'{"wte.weight": {"dtype": "F32", "shape": [4294967296, 4294967296], '
    b'"data_offsets": [0, 4]}}',                                          # overflows 64 bits
])
def test_crafted_safetensors_headers_are_refused(victim, tmp_path, header):
    folder = _copy(victim["hf"], tmp_path / "hf")
    _safetensors(folder / "model.safetensors", header, b"\0" * 8)
    line = _init_from(victim, folder, tmp_path)
    assert "model.safetensors" in line and len(line) < 600, line


def _poison(state: dict) -> None:
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))


def test_non_finite_weights_are_refused(victim, tmp_path):
    run = crafted_run(victim["run"], tmp_path / "run", _poison)
    line = _init_from(victim, newest_checkpoint(run), tmp_path)
    assert "NaN" in line, line
    line = refused("hvdlm.generate", "--run", run, "--prompt", "x")
    assert "NaN" in line, line
    line = refused("hvdlm.evaluate", "--run", run, "--data", victim["data"])
    assert "NaN" in line, line
    folder = _copy(victim["hf"], tmp_path / "hf")
    from hvdlm.models import safetensors
    tensors = safetensors.load(folder / "model.safetensors")
    tensors = {k: v.clone() for k, v in tensors.items()}
    next(iter(tensors.values()))[0] = float("inf")
    safetensors.save(folder / "model.safetensors", tensors)
    line = _init_from(victim, folder, tmp_path)
    assert "NaN or inf" in line, line


def test_a_checkpoint_claiming_more_than_it_holds_is_refused_quickly(victim, tmp_path):
    """A few KB whose config claims a GPT of a million layers: refused from the numbers alone."""
    path = tmp_path / "tiny.pt"
    state = torch.load(newest_checkpoint(victim["run"]), map_location="cpu", weights_only=True)
    state["model"] = {"wte.weight": torch.zeros(2, 2)}
    state["optimizer"] = {}
    state["config"]["model"]["n_layer"] = 10**6
    write_checkpoint(path, state)
    assert path.stat().st_size < 16 << 10
    line = refused("hvdlm.generate", "--run", victim["run"], "--checkpoint", path, "--prompt", "x")
    assert "parameters" in line, line
