"""python -m hvdlm.verify: passes on fresh output, names the bad file after each corruption."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest

from hvdlm import preprocess
from hvdlm.errors import DataError
from hvdlm.text.shards import sha256_file, verify_dataset
from tests.conftest import run_module


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    (root / "in").mkdir()
    for i in range(30):
        (root / "in" / f"{i:02d}.txt").write_text(f"document {i}: " + "text é " * (i + 1))
    assert preprocess.main([str(root / "in"), "--out", str(root / "data"), "--tokenizer",
                            "byte", "--shard-tokens", "500", "--val-fraction", "0.1", "--workers", "1"]) == 0
    return root / "data"


@pytest.fixture
def data(fresh, tmp_path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(fresh, copy)
    return copy


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _shard(d: Path, i: int = 1) -> Path:
    return d / _manifest(d)["splits"]["train"][i]["path"]


def _reseal(d: Path, shard: Path) -> None:
    """Update the manifest's sha256 so that the deeper checks are reached."""
    m = _manifest(d)
    for s in m["splits"]["train"]:
        if d / s["path"] == shard:
            s["sha256"] = sha256_file(shard)
    (d / "manifest.json").write_text(json.dumps(m))


def test_fresh_output_passes(fresh):
    proc = run_module("hvdlm.verify", fresh)
    assert proc.returncode == 0 and "ok (" in proc.stdout
    totals = verify_dataset(fresh)
    assert totals["docs"] == 30 and totals["shards"] >= 4


def test_flipped_token_byte_names_the_file(data):
    shard = _shard(data)
    with h5py.File(shard) as f:
        offset = f["tokens"].id.get_offset()
    raw = bytearray(shard.read_bytes())
    raw[offset + 10] ^= 0x01
    shard.write_bytes(bytes(raw))
    proc = run_module("hvdlm.verify", data)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert f"{shard}: sha256" in proc.stderr


def test_truncated_shard_names_the_file(data):
    shard = _shard(data, 0)
    shard.write_bytes(shard.read_bytes()[:-200])
    proc = run_module("hvdlm.verify", data)
    assert proc.returncode == 1 and str(shard) in proc.stderr


def test_deleted_shard_names_the_file(data):
    shard = _shard(data, 2)
    shard.unlink()
    proc = run_module("hvdlm.verify", data)
    assert proc.returncode == 1 and f"{shard}: shard missing" in proc.stderr


def test_token_out_of_vocab_and_missing_eos(data):
    shard = _shard(data)
    with h5py.File(shard, "r+") as f:
        end = int(f["doc_offsets"][1]) - 1
        f["tokens"][end] = ord("x")
    _reseal(data, shard)
    with pytest.raises(DataError, match=f"{shard}: document 0 does not end with end-of-text"):
        verify_dataset(data)
    with h5py.File(shard, "r+") as f:
        f["tokens"][0] = 300
    _reseal(data, shard)
    with pytest.raises(DataError, match=f"{shard}: token id 300 >= vocab_size 257"):
        verify_dataset(data)


def test_bad_offsets_and_attrs(data):
    shard = _shard(data)
    with h5py.File(shard, "r+") as f:
        f["doc_offsets"][1] = f["doc_offsets"][2]
    _reseal(data, shard)
    with pytest.raises(DataError, match=f"{shard}: doc_offsets are not strictly increasing"):
        verify_dataset(data)
    with h5py.File(shard, "r+") as f:
        f.attrs["n_bytes"] = 1
    _reseal(data, shard)
    with pytest.raises(DataError, match=f"{shard}: attribute n_bytes is"):
        verify_dataset(data)


def test_manifest_and_tokenizer_problems(data):
    m = _manifest(data)
    m["eos_id"] = 3
    (data / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="tokenizer.json: vocab_size/eos_id"):
        verify_dataset(data)
    del m["splits"]
    (data / "manifest.json").write_text(json.dumps(m))
    proc = run_module("hvdlm.verify", data)
    assert proc.returncode == 1 and "manifest.json: missing field 'splits'" in proc.stderr
    assert run_module("hvdlm.verify", data / "nowhere").returncode == 1


def test_doc_offsets_kept_in_another_file_are_refused(data, tmp_path):
    shard = _shard(data)
    with h5py.File(shard, "r") as f:
        tokens, offsets, attrs = f["tokens"][...], f["doc_offsets"][...], dict(f.attrs)
    offsets.tofile(tmp_path / "offsets.bin")
    with h5py.File(shard, "w") as f:
        f.create_dataset("tokens", data=tokens)
        f.create_dataset("doc_offsets", shape=offsets.shape, dtype=offsets.dtype,
                         external=[(str(tmp_path / "offsets.bin"), 0, offsets.nbytes)])
        f.attrs.update(attrs)
    _reseal(data, shard)
    with pytest.raises(DataError, match=f"{shard}: doc_offsets are kept in external or virtual"):
        verify_dataset(data)
