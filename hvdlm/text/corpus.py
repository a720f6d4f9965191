"""Raw text in: find corpus files, read them into documents, clean, redact PII, fingerprint.

A `.txt`, `.md` or source-code file is one document; a `.jsonl` file holds one document per
line in a string field (`text` unless told otherwise), a `.parquet` file one per row in a
string column; any but parquet may be compressed (`.gz`, `.zst`). hvdlm/text/formats.py opens
and streams each format; hvdlm/text/pieces.py cuts large files into pieces read on their own.
Folders are walked recursively in sorted order; other files, non-regular files and links out of
the folder are skipped and counted. Files are streamed, so memory is bounded by the per-document
cap whatever a file expands to. Invalid UTF-8 becomes U+FFFD (counted), never a crash.

Used by `python -m hvdlm.preprocess INPUT... --out DIR`; nothing here writes files.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from hvdlm.errors import DataError
from hvdlm.text import formats
from hvdlm.text.formats import DEFAULT_CODE_EXTENSIONS, CorpusFile, file_kind
from hvdlm.text.pii import PII_KINDS, redact_pii
from hvdlm.text.pieces import LineRange, Piece, parquet_groups

DIGEST_BYTES = 16
__all__ = ["CorpusFile", "file_kind"]  # re-exported from formats


@dataclass
class ReadStats:
    """What reading dropped or repaired; summed over files and tasks."""

    files: int = 0
    records: int = 0
    bad_records: int = 0
    replaced_chars: int = 0
    replaced_docs: int = 0
    oversize: int = 0
    # per format (CorpusFile.format): {"files": n, "documents": n read, before cleaning}
    formats: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, fmt: str, files: int = 0, documents: int = 0) -> None:
        n = self.formats.setdefault(fmt, {"files": 0, "documents": 0})
        n["files"] += files
        n["documents"] += documents

    def add(self, other: "ReadStats") -> None:
        """Add what another reader (a worker's piece) counted."""
        for name, value in vars(other).items():
            if name != "formats":
                setattr(self, name, getattr(self, name) + value)
        for fmt, n in other.formats.items():
            self.count(fmt, **n)


def sum_read_stats(stats: Iterable[dict]) -> dict:
    """The sum of ReadStats as dicts (vars(stats), as the task parts record them)."""
    total = ReadStats()
    for d in stats:
        total.add(ReadStats(**d))
    return {**vars(total), "formats": dict(sorted(total.formats.items()))}


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


def collect_files(inputs: Sequence[str], follow_symlinks: bool = False,
                  code_extensions: Sequence[str] = DEFAULT_CODE_EXTENSIONS
                  ) -> tuple[list[CorpusFile], dict[str, int]]:
    """All supported regular files under `inputs`, in a deterministic order, and how many
    were skipped, by reason (SKIP_REASONS).

    A named file must be supported; inside folders, unsupported files are skipped. FIFOs,
    devices and sockets are never read (they can block or never end); symlinks inside a
    folder that lead out of it are followed only with `follow_symlinks`. A file whose format needs a package
    that is not installed (pyarrow, zstandard) is refused, naming the package.
    """
    files: list[CorpusFile] = []
    skipped = dict.fromkeys(SKIP_REASONS, 0)
    for inp in inputs:
        if os.path.isdir(inp):
            paths = list(_walk(inp, follow_symlinks, skipped))
        elif os.path.lexists(inp):
            if file_kind(os.path.basename(inp), code_extensions) is None:
                raise DataError(f"{inp}: unsupported file type (want "
                                f"{formats.describe(code_extensions)})")
            paths = [inp]
        else:
            raise DataError(f"{inp}: no such file or directory")
        for path in paths:
            kind = file_kind(os.path.basename(path), code_extensions)
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
        raise DataError(f"empty corpus: no {formats.describe(code_extensions)} files in "
                        f"{' '.join(inputs)}")
    formats.require_extras(files)
    return files, skipped


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Text of `raw` with invalid UTF-8 replaced by U+FFFD, and how many were replaced."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        # Count only replacements we made, not U+FFFD already present in the input.
        return text, text.count("\ufffd") - raw.count(b"\xef\xbf\xbd")


def _jsonl_texts(piece: Piece, fh, opts: ReadOptions, stats: ReadStats) -> Iterator[str]:
    f = piece.file
    # A whole file is read to its end (a compressed one expands past its size on disk).
    lines = LineRange(fh, *piece.bounds) if piece.count > 1 else LineRange(fh)
    for lineno, (offset, line) in enumerate(lines.lines(opts.max_document_bytes), start=1):
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
        # The line's number where it is known (a whole file or its first piece), else where.
        where = f"{f.path}:{lineno}" if piece.index == 0 else f"{f.path}: line at byte {offset}"
        _bad_record(f"{where}: {problem}", opts, stats)


def _bad_record(problem: str, opts: ReadOptions, stats: ReadStats) -> None:
    if not opts.skip_bad_records:
        raise DataError(f"{problem} (--skip-bad-records to skip)")
    stats.bad_records += 1


def _parquet_texts(piece: Piece, raw, opts: ReadOptions, stats: ReadStats) -> Iterator[str]:
    f = piece.file
    pf = formats.parquet_reader(f, raw, opts.text_field)
    meta = pf.metadata
    sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    for row, cell in formats.parquet_cells(f, pf, opts.text_field, parquet_groups(piece, sizes),
                                           opts.max_document_bytes):
        stats.records += 1
        if cell is None:
            stats.oversize += 1
        elif cell is False:
            _bad_record(f"{f.path}: row {row}: null in column {opts.text_field!r}", opts, stats)
        else:
            yield _count_replaced(*decode_utf8(cell), stats)


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
    text_field: str = "text"            # the jsonl field (parquet column) holding a document
    skip_bad_records: bool = False      # count bad jsonl lines instead of failing
    max_document_bytes: int = 16 << 20  # larger documents are skipped and counted


def read_documents(files: Sequence[CorpusFile | Piece], opts: ReadOptions = ReadOptions(),
                   stats: ReadStats | None = None,
                   progress: Callable[[int], object] | None = None) -> Iterator[str]:
    """Yield each document's text, in file order, counting in `stats`, of whole files or
    pieces of them (hvdlm/text/pieces.py); `progress(size)` is called once one has been read.
    Memory is bounded by `opts.max_document_bytes`, whatever a file expands to."""
    stats = stats if stats is not None else ReadStats()
    for item in files:
        piece = item if isinstance(item, Piece) else Piece(item)
        f = piece.file
        if piece.index == 0:  # a split file counts once
            stats.files += 1
        stats.count(f.format, files=int(piece.index == 0))
        counts = stats.formats[f.format]
        opener = formats.open_file if f.kind == "parquet" else formats.open_stream
        with opener(f) as fh:
            if f.kind == "jsonl":
                texts = _jsonl_texts(piece, fh, opts, stats)
            elif f.kind == "parquet":
                texts = _parquet_texts(piece, fh, opts, stats)
            else:
                texts = _whole_file(fh, opts, stats)
            for text in texts:
                counts["documents"] += 1
                yield text
        if progress is not None:
            progress(piece.size)


def _whole_file(fh, opts: ReadOptions, stats: ReadStats) -> Iterator[str]:
    stats.records += 1
    raw = fh.read(opts.max_document_bytes + 1)
    if len(raw) > opts.max_document_bytes:
        stats.oversize += 1
    else:
        yield _count_replaced(*decode_utf8(raw), stats)


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
