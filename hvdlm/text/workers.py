"""Preprocessing internals: the worker pool, the per-batch jobs and the task parts on disk.

Workers clean (PII), fingerprint and encode batches of documents; results come back in
submission order, so the output never depends on the number of workers. The parent writes a
task's part (`tokens.bin` + `docs.npz` + `part.json`), which the merge step turns into
shards. A piece of a split file (hvdlm/text/pieces.py) is read by the worker that gets it, so
reading and parsing one large file is shared too. Run through
`python -m hvdlm.preprocess ... --workers N`.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np

from hvdlm.errors import DataError
from hvdlm.text import corpus
from hvdlm.text.pii import PII_KINDS
from hvdlm.text.pieces import Piece
from hvdlm.text.shards import dtype_for_vocab
from hvdlm.text.tokenizer import Tokenizer, load_tokenizer

_TOKENIZER: Tokenizer | None = None  # per process: loaded once by the pool initialiser


def _init_worker(tokenizer_path: str | None, child: bool) -> None:
    global _TOKENIZER
    if child:
        # N processes already use the N cores; HF's own threads would only oversubscribe.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _TOKENIZER = load_tokenizer(tokenizer_path) if tokenizer_path else None


class Pool:
    """`workers` spawned processes (or this process when 1), mapping jobs over batches."""

    def __init__(self, workers: int, tokenizer_path: str | None) -> None:
        self.workers, self.tokenizer_path = workers, tokenizer_path
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Pool":
        if self.workers > 1:
            # spawn, not fork: the parent may hold HF threads (BPE training) or open files.
            # An executor, not mp.Pool: a worker killed (e.g. out of memory) raises here
            # instead of leaving the parent waiting forever.
            self._pool = ProcessPoolExecutor(self.workers, mp.get_context("spawn"),
                                             _init_worker, (self.tokenizer_path, True))
        else:
            _init_worker(self.tokenizer_path, False)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, job: Callable, batches: Iterable[list[str]], *args: Any) -> Iterator[Any]:
        """job(batch, *args) for each batch, results in order, at most 2N batches in flight.

        Batches are read in this (the calling) thread, so a bad input file raises here, and
        reading never runs far ahead of encoding.
        """
        if self._pool is None:
            for batch in batches:
                yield job(batch, *args)
            return
        pending: deque = deque()
        try:
            for batch in batches:
                pending.append(self._pool.submit(job, batch, *args))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise DataError("a preprocessing worker was killed (out of memory? lower --workers "
                            "or --max-document-bytes)") from None


# ---- jobs (run in workers) -----------------------------------------------------------------

BATCH_BYTES, BATCH_DOCS = 512 * 1024, 512


def text_batches(texts: Iterable[str]) -> Iterator[list[str]]:
    """`texts` in batches of about 512 kB (or 512 documents)."""
    batch, size = [], 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_BYTES or len(batch) >= BATCH_DOCS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


@dataclass(frozen=True)
class PieceWork:
    """A piece of a split file for a worker to read itself (instead of a batch of texts)."""

    piece: Piece
    read: corpus.ReadOptions


Work = Union[list[str], PieceWork]


def _batches(work: Work, stats: corpus.ReadStats | None = None) -> Iterator[list[str]]:
    if isinstance(work, PieceWork):
        yield from text_batches(corpus.read_documents([work.piece], work.read, stats))
    else:
        yield work


@dataclass
class Encoded:
    tokens: np.ndarray  # all documents' ids, each followed by end-of-text
    n_tokens: np.ndarray  # [n] int64
    n_bytes: np.ndarray  # [n] int64, UTF-8 bytes of each document's text
    digests: np.ndarray  # [n, 16] uint8
    empty: int
    redacted: dict[str, int]
    read: corpus.ReadStats | None = None  # what the worker's own reading counted (a piece)
    tokens_file: str | None = None  # a piece's ids, spilled to disk instead of `tokens`


def _fingerprints(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Digests [n, 16] uint8 and UTF-8 sizes [n] int64 of `texts`."""
    raw = [t.encode("utf-8") for t in texts]
    digests = np.frombuffer(b"".join(corpus.digest_bytes(r) for r in raw), dtype=np.uint8)
    n_bytes = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    return digests.reshape(len(raw), corpus.DIGEST_BYTES), n_bytes


def scan_job(work: Work, redact: bool) -> tuple[np.ndarray, np.ndarray]:
    scans = [_fingerprints(corpus.clean_batch(texts, redact).texts) for texts in _batches(work)]
    if len(scans) == 1:
        return scans[0]
    scans.append(_fingerprints([]))  # a piece without documents concatenates too
    return np.concatenate([d for d, _ in scans]), np.concatenate([n for _, n in scans])


def clean_job(work: Work, redact: bool) -> list[str]:
    return [t for texts in _batches(work) for t in corpus.clean_batch(texts, redact).texts]


def encode_job(work: Work, redact: bool, spill_dir: str | None = None) -> Encoded:
    """Clean and encode a batch, or read a piece and encode it, its ids spilled to a file
    in `spill_dir` (if given) as they come: memory stays at one batch, and the ids do not
    travel back through a pipe."""
    assert _TOKENIZER is not None, "pool started without a tokenizer"
    stats = corpus.ReadStats() if isinstance(work, PieceWork) else None
    dtype = dtype_for_vocab(_TOKENIZER.vocab_size)  # as the part stores them
    spill, path = None, None
    if stats is not None and spill_dir is not None:
        fd, path = tempfile.mkstemp(".tokens", dir=spill_dir)
        spill = open(fd, "wb")
    out: list[Encoded] = []
    with spill or contextlib.nullcontext():
        for texts in _batches(work, stats):
            batch = corpus.clean_batch(texts, redact)
            tokens, n_tokens = _TOKENIZER.encode_docs(batch.texts)
            tokens = tokens.astype(dtype)
            if spill is not None:
                spill.write(tokens.tobytes())
                tokens = tokens[:0]
            digests, n_bytes = _fingerprints(batch.texts)
            out.append(Encoded(tokens, n_tokens, n_bytes, digests, batch.empty, batch.redacted))
    if len(out) == 1 and stats is None:
        return out[0]
    empty = _fingerprints([])
    return Encoded(np.concatenate([np.zeros(0, dtype)] + [e.tokens for e in out]),
                   np.concatenate([empty[1]] + [e.n_tokens for e in out]),
                   np.concatenate([empty[1]] + [e.n_bytes for e in out]),
                   np.concatenate([empty[0]] + [e.digests for e in out]),
                   sum(e.empty for e in out),
                   {k: sum(e.redacted[k] for e in out) for k in PII_KINDS}, stats, path)


# ---- a task's part on disk -----------------------------------------------------------------

class PartWriter:
    """Appends encoded batches to `tokens.bin`; `close` writes docs.npz and part.json."""

    def __init__(self, folder: Path, dtype: str) -> None:
        self.folder, self.dtype = folder, dtype
        self._fh = open(folder / "tokens.bin", "wb")
        # Each list starts with an empty array, so that a part without documents concatenates.
        self._docs = {"n_tokens": [np.zeros(0, np.int64)], "n_bytes": [np.zeros(0, np.int64)],
                      "digests": [np.zeros((0, corpus.DIGEST_BYTES), np.uint8)]}
        self.empty = 0
        self.redacted = dict.fromkeys(PII_KINDS, 0)

    def add(self, enc: Encoded) -> None:
        self._fh.write(enc.tokens.astype(self.dtype).tobytes())
        if enc.tokens_file is not None:
            with open(enc.tokens_file, "rb") as spilled:
                shutil.copyfileobj(spilled, self._fh, 1 << 20)
            os.unlink(enc.tokens_file)
        for name, arrays in self._docs.items():
            arrays.append(getattr(enc, name))
        self.empty += enc.empty
        for kind, n in enc.redacted.items():
            self.redacted[kind] += n

    def close(self, info: dict) -> None:
        self._fh.close()
        docs = {name: np.concatenate(arrays) for name, arrays in self._docs.items()}
        np.savez(self.folder / "docs.npz", **docs)
        info = {**info, "dtype": self.dtype, "n_docs": len(docs["n_tokens"]),
                "n_tokens": int(docs["n_tokens"].sum()), "empty": self.empty,
                "redacted": self.redacted}
        (self.folder / "part.json").write_text(json.dumps(info, indent=1) + "\n")


@dataclass
class Part:
    folder: Path
    info: dict
    n_tokens: np.ndarray
    n_bytes: np.ndarray
    digests: np.ndarray = field(repr=False)

    def tokens(self) -> np.ndarray:
        path = self.folder / "tokens.bin"
        if os.path.getsize(path) == 0:
            return np.zeros(0, self.info["dtype"])
        return np.memmap(path, dtype=self.info["dtype"], mode="r")


def load_part(folder: Path, tokenizer_sha256: str, files_fingerprint: str) -> Part:
    """A finished task part; DataError if missing or from another run."""
    try:
        info = json.loads((folder / "part.json").read_text())
        docs = np.load(folder / "docs.npz")
    except OSError:
        task = int(folder.name.split("-")[0])
        raise DataError(f"{folder}: missing; array task {task} has not finished "
                        "(run it again)") from None
    if info["tokenizer_sha256"] != tokenizer_sha256 or info["files"] != files_fingerprint:
        raise DataError(f"{folder}: written for another tokenizer or input file list")
    return Part(folder, info, docs["n_tokens"], docs["n_bytes"], docs["digests"])

