"""Check a preprocessed dataset in full: manifest, sha256 of every shard, schema, offsets, ids.

`verify_dataset` raises DataError naming the first bad file and what is wrong with it. It
hashes every byte, so it is the slow, thorough check (`python -m hvdlm.verify DIR`);
`shards.check_shard_files` is the cheap one done at the start of training.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from hvdlm.errors import DataError
from hvdlm.text.shards import (FORMAT_VERSION, Manifest, ShardInfo, dtype_for_vocab,
                               load_manifest, sha256_file)
from hvdlm.text.tokenizer import load_tokenizer

BLOCK = 1 << 24  # tokens per read when scanning ids


def verify_dataset(root: str | Path) -> dict:
    """Raise DataError at the first problem; return totals when everything holds."""
    m = load_manifest(root)
    tok = load_tokenizer(m.tokenizer_path)
    where = m.root / "manifest.json"
    if (tok.vocab_size, tok.eos_id) != (m.vocab_size, m.eos_id):
        raise DataError(f"{m.tokenizer_path}: vocab_size/eos_id {tok.vocab_size}/{tok.eos_id} "
                        f"differ from manifest's {m.vocab_size}/{m.eos_id}")
    if m.dtype != dtype_for_vocab(m.vocab_size):
        raise DataError(f"{where}: dtype {m.dtype} does not fit vocab_size {m.vocab_size}")
    shards = [shard for split in m.splits.values() for shard in split]
    for shard in shards:
        verify_shard(m, shard, tok.sha256)
    return {"shards": len(shards), "tokens": sum(s.n_tokens for s in shards),
            "docs": sum(s.n_docs for s in shards)}


def verify_shard(m: Manifest, shard: ShardInfo, tokenizer_sha256: str) -> None:
    path = m.shard_path(shard)
    if not path.is_file():
        raise DataError(f"{path}: shard missing")
    digest = sha256_file(path)
    if digest != shard.sha256:
        raise DataError(f"{path}: sha256 {digest[:12]}... differs from the manifest's "
                        f"{shard.sha256[:12]}... (file changed or truncated)")
    try:
        with h5py.File(path, "r") as f:
            _check_schema(f, path, m, shard, tokenizer_sha256)
            offsets = f["doc_offsets"][...]
            if offsets[0] != 0:
                raise DataError(f"{path}: doc_offsets start at {offsets[0]}, want 0")
            if len(offsets) > 1 and not np.all(np.diff(offsets) > 0):
                raise DataError(f"{path}: doc_offsets are not strictly increasing")
            if offsets[-1] != shard.n_tokens:
                raise DataError(f"{path}: last doc_offset is {offsets[-1]}, want n_tokens "
                                f"{shard.n_tokens}")
            _check_tokens(f["tokens"], offsets, path, m)
    except OSError as err:
        raise DataError(f"{path}: unreadable HDF5 ({err})") from None


def _check_schema(f: h5py.File, path: Path, m: Manifest, shard: ShardInfo,
                  tokenizer_sha256: str) -> None:
    for name in ("tokens", "doc_offsets"):
        if name not in f:
            raise DataError(f"{path}: no dataset {name!r}")
    tokens, offsets = f["tokens"], f["doc_offsets"]
    if tokens.ndim != 1 or tokens.dtype != np.dtype(m.dtype):
        raise DataError(f"{path}: tokens are {tokens.dtype}{list(tokens.shape)}, want 1-D "
                        f"{m.dtype}")
    if tokens.chunks is not None or tokens.compression is not None:
        raise DataError(f"{path}: tokens are chunked or compressed, want contiguous")
    if offsets.dtype != np.int64 or offsets.shape != (shard.n_docs + 1,):
        raise DataError(f"{path}: doc_offsets are {offsets.dtype}{list(offsets.shape)}, "
                        f"want int64[{shard.n_docs + 1}]")
    want = {"format_version": FORMAT_VERSION, "vocab_size": m.vocab_size, "eos_id": m.eos_id,
            "tokenizer_sha256": tokenizer_sha256, "n_tokens": shard.n_tokens,
            "n_docs": shard.n_docs, "n_bytes": shard.n_bytes}
    for key, value in want.items():
        got = f.attrs.get(key)
        if isinstance(got, bytes):
            got = got.decode()
        if got is None or (got.item() if hasattr(got, "item") else got) != value:
            raise DataError(f"{path}: attribute {key} is {got!r}, want {value!r}")
    if tokens.shape[0] != shard.n_tokens:
        raise DataError(f"{path}: {tokens.shape[0]} tokens, manifest says {shard.n_tokens}")


def _check_tokens(tokens: h5py.Dataset, offsets: np.ndarray, path: Path, m: Manifest) -> None:
    ends = offsets[1:] - 1  # where each document's end-of-text must be
    for start in range(0, tokens.shape[0], BLOCK):
        block = tokens[start:start + BLOCK]
        if block.size and int(block.max()) >= m.vocab_size:
            raise DataError(f"{path}: token id {int(block.max())} >= vocab_size {m.vocab_size}")
        lo, hi = np.searchsorted(ends, [start, start + len(block)])
        bad = np.flatnonzero(block[ends[lo:hi] - start] != m.eos_id)
        if len(bad):
            raise DataError(f"{path}: document {lo + bad[0]} does not end with end-of-text "
                            f"(id {m.eos_id})")
