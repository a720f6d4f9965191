"""The HDF5 shard format and manifest: write, read, check cheaply, verify in full.

A shard `DIR/<split>/NNNNN.h5` holds `tokens` (1-D, uint16 or uint32, contiguous, uncompressed)
and `doc_offsets` (int64, n_docs+1; document i is `tokens[doc_offsets[i]:doc_offsets[i+1]]`,
ending in end-of-text), both kept in the file itself. `DIR/manifest.json` lists the complete
shards, by paths that stay inside DIR, with their sha256. Readers memory-map `tokens` at its
file offset, which avoids h5py's per-read overhead on the random windows training reads.

Written by `python -m hvdlm.preprocess`. `check_shard_files` is the cheap check done at the
start of training; `verify_dataset` hashes every byte and checks schema, offsets and ids (`python
-m hvdlm.verify DIR`), raising DataError that names the first bad file and what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hvdlm import output
from hvdlm.errors import DataError
from hvdlm.text.tokenizer import Tokenizer, load_tokenizer

FORMAT = "hvdlm-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BLOCK = 1 << 24  # tokens per read when verify scans ids


@dataclass
class ShardInfo:
    path: str  # relative to the dataset folder, e.g. "train/00000.h5"
    n_tokens: int
    n_docs: int
    n_bytes: int
    sha256: str


@dataclass
class Manifest:
    root: Path
    tokenizer: str
    vocab_size: int
    eos_id: int
    dtype: str
    splits: dict[str, list[ShardInfo]] = field(default_factory=dict)

    @property
    def tokenizer_path(self) -> Path:
        return self._inside(self.tokenizer)

    def shard_path(self, shard: ShardInfo) -> Path:
        return self._inside(shard.path)

    def _inside(self, rel: str) -> Path:  # rel must be relative and, symlinks followed, inside
        path = self.root / rel
        if os.path.isabs(rel) or not path.resolve().is_relative_to(self.root.resolve()):
            raise DataError(f"{self.root / MANIFEST}: path {rel!r} leaves the dataset folder")
        return path

    def open_tokenizer(self) -> Tokenizer:
        """The dataset's tokenizer; DataError if its vocab_size or end-of-text id differ."""
        tok = load_tokenizer(self.tokenizer_path)
        if (tok.vocab_size, tok.eos_id) != (self.vocab_size, self.eos_id):
            raise DataError(f"{self.tokenizer_path}: vocab_size/eos_id {tok.vocab_size}/"
                            f"{tok.eos_id} differ from manifest's {self.vocab_size}/{self.eos_id}")
        return tok


def _own_storage(ds: h5py.Dataset, path: Path) -> None:
    if ds.is_virtual or ds.id.get_create_plist().get_external_count():  # no sha256 covers those
        raise DataError(f"{path}: {ds.name[1:]} are kept in external or virtual storage")


def dtype_for_vocab(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 65_536 else "uint32"


def sha256_file(path: str | os.PathLike, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _need(obj: dict, key: str, kind: type | tuple, where: str | Path):
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(obj[key], kind) or isinstance(obj[key], bool):
        raise DataError(f"{where}: field {key!r} has the wrong type")
    return obj[key]


def load_manifest(root: str | os.PathLike) -> Manifest:
    """Read DIR/manifest.json; DataError naming the file and field if missing or malformed."""
    root = Path(root)
    path = root / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (not a preprocessed dataset?)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DataError(f"{path}: field 'format' is not {FORMAT!r}")
    if raw.get("version") != FORMAT_VERSION:
        raise DataError(f"{path}: field 'version' is {raw.get('version')!r}, "
                        f"this hvdlm reads {FORMAT_VERSION}")
    dtype = _need(raw, "dtype", str, path)
    if dtype not in ("uint16", "uint32"):
        raise DataError(f"{path}: field 'dtype' is {dtype!r}, want uint16 or uint32")
    splits = {}
    for name, shards in _need(raw, "splits", dict, path).items():
        if not isinstance(shards, list):
            raise DataError(f"{path}: field 'splits.{name}' is not a list")
        splits[name] = [_shard_info(s, f"{path}: splits.{name}[{i}]")
                        for i, s in enumerate(shards)]
    return Manifest(root=root, tokenizer=_need(raw, "tokenizer", str, path),
                    vocab_size=_need(raw, "vocab_size", int, path),
                    eos_id=_need(raw, "eos_id", int, path), dtype=dtype, splits=splits)


def _shard_info(obj, where: str) -> ShardInfo:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: not an object")
    kinds = {"path": str, "n_tokens": int, "n_docs": int, "n_bytes": int, "sha256": str}
    return ShardInfo(**{key: _need(obj, key, kind, where) for key, kind in kinds.items()})


def save_manifest(m: Manifest) -> Path:
    """Write DIR/manifest.json atomically; it is written last and lists complete shards."""
    path = m.root / MANIFEST
    raw = {"format": FORMAT, "version": FORMAT_VERSION, "tokenizer": m.tokenizer,
           "vocab_size": m.vocab_size, "eos_id": m.eos_id, "dtype": m.dtype,
           "splits": {s: [asdict(i) for i in shards] for s, shards in m.splits.items()}}
    output.write_atomic(path, (json.dumps(raw, indent=1) + "\n").encode())
    return path


def write_shard(root: Path, rel_path: str, tokens: np.ndarray, doc_offsets: np.ndarray,
                n_bytes: int, vocab_size: int, eos_id: int, tokenizer_sha256: str) -> ShardInfo:
    """Write one shard under a temporary name, rename it when complete, return its record."""
    final = root / rel_path
    final.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"format_version": FORMAT_VERSION, "vocab_size": vocab_size, "eos_id": eos_id,
             "tokenizer_sha256": tokenizer_sha256, "n_tokens": len(tokens),
             "n_docs": len(doc_offsets) - 1, "n_bytes": n_bytes}
    # No timestamps: the same data must give byte-identical files, whoever writes them.
    with output.replacing(final) as tmp, h5py.File(tmp, "w", track_order=False) as f:
        f.create_dataset("tokens", data=np.ascontiguousarray(tokens, dtype_for_vocab(vocab_size)),
                         track_times=False)
        f.create_dataset("doc_offsets", data=np.asarray(doc_offsets, np.int64),
                         track_times=False)
        f.attrs.update(attrs)
    return ShardInfo(path=rel_path, n_tokens=len(tokens), n_docs=len(doc_offsets) - 1,
                     n_bytes=n_bytes, sha256=sha256_file(final))


def check_shard_files(manifest: Manifest, split: str) -> None:
    """Cheap start-of-training check: each shard is inside DIR, readable, self-contained (no
    external or virtual storage), not truncated. Only metadata: hashing is `hvdlm.verify`'s."""
    if split not in manifest.splits:
        raise DataError(f"{manifest.root / MANIFEST}: no split {split!r}")
    for shard in manifest.splits[split]:
        path = manifest.shard_path(shard)
        try:
            size = os.path.getsize(path)
            with h5py.File(path, "r") as f:
                ds = f["tokens"]
                _own_storage(ds, path)
                shape, dtype, offset = ds.shape, ds.dtype, ds.id.get_offset()
        except FileNotFoundError:
            raise DataError(f"{path}: shard missing") from None
        except (OSError, KeyError) as err:
            raise DataError(f"{path}: unreadable shard ({err})") from None
        if shape != (shard.n_tokens,) or dtype != np.dtype(manifest.dtype):
            raise DataError(f"{path}: tokens are {dtype}{list(shape)}, manifest says "
                            f"{manifest.dtype}[{shard.n_tokens}]")
        end = (offset or 0) + shard.n_tokens * np.dtype(manifest.dtype).itemsize
        if size < end:
            raise DataError(f"{path}: truncated ({size} bytes, tokens end at byte {end})")


def open_tokens(path: str | os.PathLike) -> np.ndarray:
    """Read-only memory map of a shard's `tokens` (loaded into memory if not contiguous)."""
    with h5py.File(path, "r") as f:
        ds = f["tokens"]
        offset, shape, dtype = ds.id.get_offset(), ds.shape, ds.dtype
        if offset is None or ds.chunks is not None or ds.compression is not None:
            return ds[...]
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def read_doc_offsets(path: str | os.PathLike) -> np.ndarray:
    """A shard's `doc_offsets` (int64, n_docs+1)."""
    with h5py.File(path, "r") as f:
        return f["doc_offsets"][...].astype(np.int64, copy=False)


class ShardWriter:
    """Packs documents of one split, in order, into shards of about `shard_tokens` tokens.

    A shard is closed as soon as it holds at least `shard_tokens` tokens; documents are never
    split across shards, so every shard starts and ends on a document boundary.
    """

    def __init__(self, root: Path, split: str, shard_tokens: int, vocab_size: int, eos_id: int,
                 tokenizer_sha256: str) -> None:
        self.root, self.split, self.shard_tokens = root, split, shard_tokens
        self.meta = dict(vocab_size=vocab_size, eos_id=eos_id, tokenizer_sha256=tokenizer_sha256)
        self.shards: list[ShardInfo] = []
        self._docs: list[np.ndarray] = []
        self._tokens = self._bytes = 0

    def add(self, tokens: np.ndarray, n_bytes: int) -> None:
        self._docs.append(tokens)
        self._tokens += len(tokens)
        self._bytes += n_bytes
        if self._tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._docs:
            return
        offsets = np.zeros(len(self._docs) + 1, dtype=np.int64)
        np.cumsum([len(d) for d in self._docs], out=offsets[1:])
        rel = f"{self.split}/{len(self.shards):05d}.h5"
        self.shards.append(write_shard(self.root, rel, np.concatenate(self._docs), offsets,
                                       self._bytes, **self.meta))
        self._docs, self._tokens, self._bytes = [], 0, 0


# ---- full verification --------------------------------------------------------------------------

def verify_dataset(root: str | Path) -> dict:
    """Raise DataError at the first problem; return totals when everything holds."""
    m = load_manifest(root)
    tok = m.open_tokenizer()
    if m.dtype != dtype_for_vocab(m.vocab_size):
        raise DataError(f"{m.root / MANIFEST}: dtype {m.dtype} does not fit vocab_size "
                        f"{m.vocab_size}")
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
        _own_storage(f[name], path)
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
        got = got.decode() if isinstance(got, bytes) else got
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
