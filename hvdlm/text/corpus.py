"""Raw text in: find corpus files, read them into documents, clean, redact PII, fingerprint.

A `.txt`, `.md` or `.py` file is one document; a `.jsonl` file holds one document per line in
a string field (`text` unless told otherwise); any of them may be gzip-compressed (`.gz`).
Folders are walked recursively in sorted order; other files, non-regular files and links out of
the folder are skipped and counted. Files are streamed, so memory is bounded by the per-document
cap whatever a file expands to. Invalid UTF-8 becomes U+FFFD (counted), never a crash.

Used by `python -m hvdlm.preprocess INPUT... --out DIR`; nothing here writes files.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import stat
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np

from hvdlm.errors import DataError
from hvdlm.text.pii import PII_KINDS, redact_pii

TEXT_SUFFIXES = (".txt", ".md", ".py")
DIGEST_BYTES = 16


@dataclass(frozen=True)
class CorpusFile:
    """One input file: its path as the user will recognise it, its size on disk, its kind."""

    path: str
    size: int
    kind: str  # "text" | "jsonl"
    gzipped: bool


@dataclass
class ReadStats:
    """What reading dropped or repaired; summed over files and tasks."""

    files: int = 0
    records: int = 0
    bad_records: int = 0
    replaced_chars: int = 0
    replaced_docs: int = 0
    oversize: int = 0


def file_kind(name: str) -> tuple[str, bool] | None:
    """('text'|'jsonl', gzipped) for a supported file name, else None."""
    gzipped = name.lower().endswith(".gz")
    base = name.lower().removesuffix(".gz")
    if base.endswith(TEXT_SUFFIXES):
        return "text", gzipped
    return ("jsonl", gzipped) if base.endswith(".jsonl") else None


SKIP_REASONS = ("unsupported", "not_regular", "outside_input")


def _walk_error(err: OSError) -> None:
    raise DataError(f"{err.filename}: cannot read: {err.strerror}")


def _inside(path: str, top: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), top]) == top


def _walk(top: str, follow_symlinks: bool, skipped: dict[str, int]) -> Iterator[str]:
    """Paths of the files under folder `top`, sorted, links that leave it not followed."""
    real_top, seen = os.path.realpath(top), set()
    for root, dirs, names in os.walk(top, onerror=_walk_error, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link loop, or a second way into one folder
            dirs[:] = []
            continue
        seen.add(real)
        for entries in (dirs, names):
            paths = [os.path.join(root, n) for n in sorted(entries)]
            allowed = [p for p in paths if follow_symlinks or not os.path.islink(p)
                       or _inside(p, real_top)]
            skipped["outside_input"] += len(paths) - len(allowed)
            entries[:] = [os.path.basename(p) for p in allowed]
        yield from (os.path.join(root, n) for n in names)


def collect_files(inputs: Sequence[str], follow_symlinks: bool = False
                  ) -> tuple[list[CorpusFile], dict[str, int]]:
    """All supported regular files under `inputs`, in a deterministic order, and how many
    were skipped, by reason (SKIP_REASONS).

    A named file must be supported; inside folders, unsupported files are skipped. FIFOs,
    devices and sockets are never read (they can block or never end); symlinks inside a
    folder that lead out of it are followed only with `follow_symlinks`.
    """
    files: list[CorpusFile] = []
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    for inp in inputs:
        if os.path.isdir(inp):
            paths = list(_walk(inp, follow_symlinks, skipped))
        elif os.path.lexists(inp):
            if file_kind(inp) is None:
                raise DataError(f"{inp}: unsupported file type (want .txt, .md, .py, .jsonl, "
                                "optionally .gz)")
            paths = [inp]
        else:
            raise DataError(f"{inp}: no such file or directory")
        for path in paths:
            kind = file_kind(os.path.basename(path))
            if kind is None:
                skipped["unsupported"] += 1
                continue
            try:
                st = os.stat(path)
            except OSError as err:
                raise DataError(f"{path}: cannot read: {err.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                skipped["not_regular"] += 1
            else:
                files.append(CorpusFile(path, st.st_size, *kind))
    if not files:
        raise DataError(f"empty corpus: no .txt/.md/.py/.jsonl(.gz) files in {' '.join(inputs)}")
    return files, skipped


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Text of `raw` with invalid UTF-8 replaced by U+FFFD, and how many were replaced."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        # Count only replacements we made, not U+FFFD already present in the input.
        return text, text.count("\ufffd") - raw.count(b"\xef\xbf\xbd")


@contextmanager
def _open(f: CorpusFile) -> Iterator[BinaryIO]:
    """A buffered binary stream of `f`, decompressed if gzipped; read errors are DataErrors."""
    try:
        # O_NONBLOCK: a file swapped for a FIFO since it was listed must not hang the open.
        fd = os.open(f.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as raw:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DataError(f"{f.path}: no longer a regular file")
            os.set_blocking(fd, True)
            yield gzip.GzipFile(fileobj=raw) if f.gzipped else raw
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{f.path}: bad gzip data: {err}") from None
    except OSError as err:
        raise DataError(f"{f.path}: cannot read: {err.strerror or err}") from None


def _lines(fh: BinaryIO, max_bytes: int) -> Iterator[bytes | None]:
    """Each line of `fh` (None for one longer than `max_bytes`), holding at most that much."""
    while line := fh.readline(max_bytes + 1):
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):  # drop the rest of an oversized line
            line = fh.readline(1 << 20)
        yield None


def _jsonl_texts(f: CorpusFile, fh: BinaryIO, opts: ReadOptions,
                 stats: ReadStats) -> Iterator[str]:
    for lineno, line in enumerate(_lines(fh, opts.max_document_bytes), start=1):
        if line is not None and not line.strip():
            continue
        stats.records += 1
        if line is None:
            stats.oversize += 1
            continue
        text, replaced = decode_utf8(line)
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            problem = "not valid JSON"
        else:
            value = record.get(opts.text_field) if isinstance(record, dict) else None
            if isinstance(value, str):
                yield _count_replaced(value, replaced, stats)
                continue
            problem = f"no string field {opts.text_field!r}"
        if not opts.skip_bad_records:
            raise DataError(f"{f.path}:{lineno}: {problem} (--skip-bad-records to skip)")
        stats.bad_records += 1


_SURROGATE = re.compile("[\ud800-\udfff]")


def _count_replaced(text: str, replaced: int, stats: ReadStats) -> str:
    # JSON escapes can smuggle in lone surrogates, which are not encodable text: replace them.
    text, n = _SURROGATE.subn("\ufffd", text)
    replaced += n
    if replaced:
        stats.replaced_chars += replaced
        stats.replaced_docs += 1
    return text


@dataclass(frozen=True)
class ReadOptions:
    text_field: str = "text"            # the jsonl field holding a document
    skip_bad_records: bool = False      # count bad jsonl lines instead of failing
    max_document_bytes: int = 16 << 20  # larger documents are skipped and counted


def read_documents(files: Sequence[CorpusFile], opts: ReadOptions = ReadOptions(),
                   stats: ReadStats | None = None,
                   progress: Callable[[int], object] | None = None) -> Iterator[str]:
    """Yield each document's text, in file order, counting in `stats`; `progress(f.size)`
    is called once a file has been read. Memory is bounded by `opts.max_document_bytes`,
    whatever a file expands to."""
    stats = stats if stats is not None else ReadStats()
    for f in files:
        with _open(f) as fh:
            stats.files += 1
            if f.kind == "jsonl":
                yield from _jsonl_texts(f, fh, opts, stats)
            else:
                stats.records += 1
                raw = fh.read(opts.max_document_bytes + 1)
                if len(raw) > opts.max_document_bytes:
                    stats.oversize += 1
                else:
                    yield _count_replaced(*decode_utf8(raw), stats)
        if progress is not None:
            progress(f.size)


def is_empty(text: str) -> bool:
    """Documents with nothing but whitespace are dropped."""
    return not text.strip()


# ---- fingerprints, dedup, split ------------------------------------------------------------

def digest_bytes(raw: bytes) -> bytes:
    """16-byte fingerprint of a document's UTF-8 text (exact duplicates, split choice)."""
    return hashlib.blake2b(raw, digest_size=DIGEST_BYTES).digest()


def files_fingerprint(files: Sequence[CorpusFile]) -> str:
    """Identifies the input file list (paths, sizes), so every array step sees the same."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.path}\0{f.size}\0".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _mix(x: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser: a seeded, well-spread score from a digest word.
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def seeded_score(digests: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """uint64 score per digest (array of shape [n, 16] uint8), a function of (seed, text)."""
    words = digests.view("<u8").reshape(len(digests), 2)
    key = _mix(np.array([(seed * 2 + salt) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    with np.errstate(over="ignore"):
        return _mix(words[:, 0] ^ key) ^ words[:, 1]


def first_occurrences(digests: np.ndarray) -> np.ndarray:
    """Bool mask: True where a digest appears for the first time (exact dedup, first kept)."""
    keep = np.zeros(len(digests), dtype=bool)
    if len(digests):
        _, first = np.unique(digests.view(f"V{DIGEST_BYTES}").ravel(), return_index=True)
        keep[first] = True
    return keep


def val_count(n: int, fraction: float) -> int:
    """How many of n (distinct) documents to hold out: round(F·n), at least one of each side."""
    k = round(fraction * n)
    if 0 < fraction and n >= 2:
        k = max(k, 1)
    if fraction < 1 and n >= 2:
        k = min(k, n - 1)
    return min(k, n)


def choose_val(digests: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Bool mask of held-out documents, chosen by (seed, text) among distinct texts.

    Identical texts always land on the same side, so val never repeats a train document.
    The choice depends on the set of texts only, not on file order, workers or tasks.
    """
    if not len(digests):
        return np.zeros(0, dtype=bool)
    uniq, inverse = np.unique(digests.view(f"V{DIGEST_BYTES}").ravel(), return_inverse=True)
    uniq_bytes = uniq.view(np.uint8).reshape(len(uniq), DIGEST_BYTES)
    order = np.argsort(seeded_score(uniq_bytes, seed), kind="stable")
    held = np.zeros(len(uniq), dtype=bool)
    held[order[:val_count(len(uniq), fraction)]] = True
    return held[inverse.ravel()]


@dataclass
class DocBatch:
    """Cleaned documents of one batch, ready for the tokenizer."""

    texts: list[str] = field(default_factory=list)
    empty: int = 0
    redacted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_KINDS, 0))


def clean_batch(texts: Sequence[str], redact: bool) -> DocBatch:
    """Drop empty documents and (optionally) redact PII, keeping document order."""
    out = DocBatch()
    for text in texts:
        if is_empty(text):
            out.empty += 1
            continue
        if redact:
            text, counts = redact_pii(text)
            for kind, n in counts.items():
                out.redacted[kind] += n
        out.texts.append(text)
    return out
