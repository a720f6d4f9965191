"""Untrusted datasets: a manifest or shard that reaches outside DATA, HDF5 data kept in other
files, a tokenizer that does not fit the manifest or is not a tokenizer at all. Each is refused
by `hvdlm.verify` and by `hvdlm.train` in one line naming the file, and train writes no RUN.

The tampered data is valid in every other way (the manifest's sha256 is updated to the tampered
shard), so without the check each test guards, verify would pass and train would run.

    .venv/bin/python -m pytest tests/security/test_untrusted_datasets.py
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest

from hvdlm.text.shards import sha256_file
from tests.conftest import TINY_RUN, run_module


def _manifest(data: Path) -> dict:
    return json.loads((data / "manifest.json").read_text())


def _save(data: Path, manifest: dict) -> None:
    (data / "manifest.json").write_text(json.dumps(manifest))


def _first_shard(data: Path) -> Path:
    return data / _manifest(data)["splits"]["train"][0]["path"]


def _set_first_path(data: Path, path: str) -> None:
    m = _manifest(data)
    m["splits"]["train"][0]["path"] = path
    _save(data, m)


def _reseal(data: Path) -> None:
    """The manifest's sha256 of the first train shard, as an attacker would update it."""
    m = _manifest(data)
    m["splits"]["train"][0]["sha256"] = sha256_file(_first_shard(data))
    _save(data, m)


def _rewrite_tokens(data: Path, outside: Path, kind: str) -> None:
    """Rewrite the first train shard with the same tokens, kept outside it (external file or
    virtual dataset), same offsets and attributes."""
    shard = _first_shard(data)
    with h5py.File(shard, "r") as f:
        tokens, offsets, attrs = f["tokens"][...], f["doc_offsets"][...], dict(f.attrs)
    with h5py.File(shard, "w") as f:
        if kind == "external":
            tokens.tofile(outside / "tokens.bin")
            f.create_dataset("tokens", shape=tokens.shape, dtype=tokens.dtype,
                             external=[(str(outside / "tokens.bin"), 0, tokens.nbytes)])
        else:
            with h5py.File(outside / "source.h5", "w") as src:
                src.create_dataset("tokens", data=tokens)
            layout = h5py.VirtualLayout(shape=tokens.shape, dtype=tokens.dtype)
            layout[:] = h5py.VirtualSource(str(outside / "source.h5"), "tokens", tokens.shape)
            f.create_virtual_dataset("tokens", layout)
        f.create_dataset("doc_offsets", data=offsets)
        f.attrs.update(attrs)
    with open(shard, "ab") as fh:  # padded, so that it does not look truncated either
        fh.write(bytes(tokens.nbytes))
    _reseal(data)


def absolute_path(data: Path, outside: Path) -> list[str]:
    copy = shutil.copy(_first_shard(data), outside / "00000.h5")
    _set_first_path(data, str(copy))
    return [str(copy), "leaves the dataset folder"]


def absolute_path_into_data(data: Path, outside: Path) -> list[str]:
    _set_first_path(data, str(_first_shard(data)))  # the right file, but manifests are portable
    return [f"'{_first_shard(data)}' leaves the dataset folder"]


def dotdot_path(data: Path, outside: Path) -> list[str]:
    shutil.copy(_first_shard(data), outside / "00000.h5")
    _set_first_path(data, "../outside/00000.h5")
    return ["manifest.json", "'../outside/00000.h5' leaves the dataset folder"]


def symlinked_shard(data: Path, outside: Path) -> list[str]:
    shard = _first_shard(data)
    shard.rename(outside / "00000.h5")
    shard.symlink_to(outside / "00000.h5")
    return [f"'{shard.relative_to(data)}' leaves the dataset folder"]


def symlinked_tokenizer(data: Path, outside: Path) -> list[str]:
    (data / "tokenizer.json").rename(outside / "tokenizer.json")
    (data / "tokenizer.json").symlink_to(outside / "tokenizer.json")
    return ["'tokenizer.json' leaves the dataset folder"]


def dotdot_tokenizer(data: Path, outside: Path) -> list[str]:
    shutil.copy(data / "tokenizer.json", outside / "tokenizer.json")
    m = _manifest(data)
    m["tokenizer"] = "../outside/tokenizer.json"
    _save(data, m)
    return ["'../outside/tokenizer.json' leaves the dataset folder"]


def external_tokens(data: Path, outside: Path) -> list[str]:
    _rewrite_tokens(data, outside, "external")
    return [f"{_first_shard(data)}: tokens are kept in external or virtual storage"]


def virtual_tokens(data: Path, outside: Path) -> list[str]:
    _rewrite_tokens(data, outside, "virtual")
    return [f"{_first_shard(data)}: tokens are kept in external or virtual storage"]


def vocab_mismatch(data: Path, outside: Path) -> list[str]:
    m = _manifest(data)
    m["vocab_size"] = 300  # still uint16, so only the tokenizer comparison can catch it
    _save(data, m)
    return ["tokenizer.json: vocab_size/eos_id 257/256 differ from manifest's 300/256"]


def eos_mismatch(data: Path, outside: Path) -> list[str]:
    m = _manifest(data)
    m["eos_id"] = 10
    _save(data, m)
    return ["tokenizer.json: vocab_size/eos_id 257/256 differ from manifest's 257/10"]


ATTACKS = [absolute_path, absolute_path_into_data, dotdot_path, symlinked_shard,
           symlinked_tokenizer, dotdot_tokenizer, external_tokens, virtual_tokens,
           vocab_mismatch, eos_mismatch]


@pytest.fixture
def data(byte_dataset, tmp_path) -> Path:
    (tmp_path / "outside").mkdir()
    return Path(shutil.copytree(byte_dataset, tmp_path / "data"))


def _one_line(proc, words: list[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
def test_refused_by_verify_and_train(attack, data, tmp_path):
    words = attack(data, tmp_path / "outside")
    _one_line(run_module("hvdlm.verify", data, timeout=120), words)
    run = tmp_path / "run"
    _one_line(run_module("hvdlm.train", "--data", data, "--out", run, *TINY_RUN, timeout=120),
              words)
    assert not run.exists(), "a refused dataset left a run folder behind"


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe garbage", b"[]", b"{}",
                                     b'{"added_tokens": "x"}', b'{"model": 3}'])
def test_malformed_tokenizer_is_one_line(content, data, tmp_path):
    (data / "tokenizer.json").write_bytes(content)
    words = [f"{data / 'tokenizer.json'}: not a valid tokenizer.json"]
    _one_line(run_module("hvdlm.verify", data, timeout=120), words)
    run = tmp_path / "run"
    _one_line(run_module("hvdlm.train", "--data", data, "--out", run, *TINY_RUN, timeout=120),
              words)
    assert not run.exists()


def test_untampered_copy_passes_verify(data):
    """The copy itself is sound: every refusal above comes from the tampering."""
    assert run_module("hvdlm.verify", data, timeout=120).returncode == 0
