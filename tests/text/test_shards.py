"""hvdlm.shards: writer, memory-mapped reader, manifest loading and the cheap file check."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from hvdlm.errors import DataError
from hvdlm.text.shards import (Manifest, ShardWriter, check_shard_files, load_manifest, open_tokens,
                               read_doc_offsets, save_manifest, write_shard)

META = dict(vocab_size=300, eos_id=0, tokenizer_sha256="ab" * 32)


def _dataset(root, docs, shard_tokens=10**9) -> Manifest:
    w = ShardWriter(root, "train", shard_tokens, **META)
    for d in docs:
        w.add(np.asarray(d, np.uint32), n_bytes=len(d) * 2)
    w.flush()
    m = Manifest(root, "tokenizer.json", 300, 0, "uint16", {"train": w.shards, "val": []})
    save_manifest(m)
    return m


def test_write_and_read_back(tmp_path):
    tokens = np.array([5, 6, 0, 7, 0], np.uint16)
    info = write_shard(tmp_path, "train/00000.h5", tokens, np.array([0, 3, 5]), 9, **META)
    path = tmp_path / info.path
    assert (info.n_tokens, info.n_docs, info.n_bytes) == (5, 2, 9)
    mm = open_tokens(path)
    assert isinstance(mm, np.memmap) and mm.dtype == np.uint16 and mm.tolist() == tokens.tolist()
    assert read_doc_offsets(path).tolist() == [0, 3, 5]
    with h5py.File(path) as f:
        assert f["tokens"].chunks is None and f["tokens"].compression is None
        assert f.attrs["n_bytes"] == 9 and f.attrs["tokenizer_sha256"] == "ab" * 32
    assert not list(tmp_path.glob("train/*.tmp"))


def test_same_data_gives_byte_identical_files(tmp_path):
    a = write_shard(tmp_path, "a.h5", np.arange(50) % 7, np.array([0, 20, 50]), 1, **META)
    b = write_shard(tmp_path, "b.h5", np.arange(50) % 7, np.array([0, 20, 50]), 1, **META)
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_uint32_for_big_vocab(tmp_path):
    info = write_shard(tmp_path, "s.h5", np.array([70000, 1]), np.array([0, 2]), 3,
                       vocab_size=70001, eos_id=1, tokenizer_sha256="x")
    assert open_tokens(tmp_path / info.path).dtype == np.uint32


def test_shard_writer_packs_whole_documents(tmp_path):
    docs = [[1, 2, 0], [3, 0], [4, 5, 6, 7, 0], [8, 0], [9, 0]]
    m = _dataset(tmp_path, docs, shard_tokens=4)
    shards = m.splits["train"]
    assert [(s.path, s.n_docs, s.n_tokens) for s in shards] == [
        ("train/00000.h5", 2, 5), ("train/00001.h5", 1, 5), ("train/00002.h5", 2, 4)]
    flat = np.concatenate([open_tokens(m.shard_path(s)) for s in shards])
    assert flat.tolist() == sum(docs, [])
    assert sum(s.n_bytes for s in shards) == 2 * len(flat)


def test_manifest_roundtrip_and_errors(tmp_path):
    m = _dataset(tmp_path, [[1, 0]])
    loaded = load_manifest(tmp_path)
    assert loaded.splits == m.splits and loaded.tokenizer_path == tmp_path / "tokenizer.json"
    raw = json.loads((tmp_path / "manifest.json").read_text())
    del raw["splits"]["train"][0]["sha256"]
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"manifest.json: splits.train\[0\]: missing field 'sha256'"):
        load_manifest(tmp_path)
    raw["splits"]["train"][0]["sha256"] = "00"
    raw["vocab_size"] = "300"
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="manifest.json: field 'vocab_size' has the wrong type"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(DataError, match="manifest.json: cannot read"):
        load_manifest(tmp_path)
    with pytest.raises(DataError, match="manifest.json: no such file"):
        load_manifest(tmp_path / "elsewhere")


def test_check_shard_files_catches_truncation_and_missing(tmp_path):
    m = _dataset(tmp_path, [list(range(1, 300)) + [0]] * 40, shard_tokens=4000)
    check_shard_files(m, "train")
    check_shard_files(m, "val")
    first, second = (m.shard_path(s) for s in m.splits["train"][:2])
    size = os.path.getsize(first)
    with open(first, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(DataError, match=f"{first}: (truncated|unreadable)"):
        check_shard_files(m, "train")
    with open(first, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(DataError, match=f"{first}"):
        check_shard_files(m, "train")
    first.unlink()
    with pytest.raises(DataError, match=f"{first}: shard missing"):
        check_shard_files(m, "train")
    with pytest.raises(DataError, match="no split 'test'"):
        check_shard_files(m, "test")
    assert second.exists()


def test_manifest_paths_must_stay_inside_the_dataset(tmp_path):
    root = tmp_path / "data"
    m = _dataset(root, [[1, 2, 0]])
    (tmp_path / "elsewhere.h5").write_bytes(b"")
    for bad in ["../elsewhere.h5", str(tmp_path / "elsewhere.h5"), str(root / "train/00000.h5")]:
        m.splits["train"][0].path = bad
        with pytest.raises(DataError, match=f"manifest.json: path '{bad}' leaves the dataset"):
            check_shard_files(m, "train")
    m.splits["train"][0].path = "train/00000.h5"
    (root / "tokenizer.json").symlink_to(tmp_path / "elsewhere.h5")
    with pytest.raises(DataError, match="path 'tokenizer.json' leaves the dataset folder"):
        m.tokenizer_path
    check_shard_files(m, "train")


def test_check_shard_files_refuses_tokens_kept_in_another_file(tmp_path):
    m = _dataset(tmp_path, [[1, 2, 0]])
    shard = m.shard_path(m.splits["train"][0])
    np.array([1, 2, 0], np.uint16).tofile(tmp_path / "raw.bin")
    with h5py.File(shard, "w") as f:
        f.create_dataset("tokens", shape=(3,), dtype=np.uint16,
                         external=[(str(tmp_path / "raw.bin"), 0, 6)])
    with pytest.raises(DataError, match=f"{shard}: tokens are kept in external or virtual"):
        check_shard_files(m, "train")
