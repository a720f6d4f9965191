"""Raw text in: find corpus files, read them into documents, clean, redact PII, fingerprint.

A `.txt`, `.md` or `.py` file is one document; a `.jsonl` file holds one document per line in
a string field (`text` unless told otherwise); any of them may be gzip-compressed (`.gz`).
Folders are walked recursively in sorted order; other files in a folder are skipped and
counted. Invalid UTF-8 becomes U+FFFD (counted), never a crash.

Used by `python -m hvdlm.preprocess INPUT... --out DIR`; nothing here writes files.
"""
from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import os
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from hvdlm.errors import DataError

TEXT_SUFFIXES = (".txt", ".md", ".py")
PII_KINDS = ("email", "phone", "ip", "card")
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


def file_kind(name: str) -> tuple[str, bool] | None:
    """('text'|'jsonl', gzipped) for a supported file name, else None."""
    gzipped = name.lower().endswith(".gz")
    base = name.lower().removesuffix(".gz")
    if base.endswith(TEXT_SUFFIXES):
        return "text", gzipped
    return ("jsonl", gzipped) if base.endswith(".jsonl") else None


def _corpus_file(path: str, kind: tuple[str, bool]) -> CorpusFile:
    try:
        return CorpusFile(path, os.stat(path).st_size, *kind)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}") from None


def _walk_error(err: OSError) -> None:
    raise DataError(f"{err.filename}: cannot read: {err.strerror}")


def collect_files(inputs: Sequence[str]) -> tuple[list[CorpusFile], int]:
    """All supported files under `inputs`, in a deterministic order, and the skipped count.

    A named file must be supported; inside folders, unsupported files are skipped and counted.
    """
    files: list[CorpusFile] = []
    skipped = 0
    for inp in inputs:
        if os.path.isdir(inp):
            for root, dirs, names in os.walk(inp, onerror=_walk_error):
                dirs.sort()
                for name in sorted(names):
                    kind = file_kind(name)
                    if kind is None:
                        skipped += 1
                    else:
                        files.append(_corpus_file(os.path.join(root, name), kind))
        elif os.path.lexists(inp):
            kind = file_kind(inp)
            if kind is None:
                raise DataError(f"{inp}: unsupported file type (want .txt, .md, .py, .jsonl, "
                                "optionally .gz)")
            files.append(_corpus_file(inp, kind))
        else:
            raise DataError(f"{inp}: no such file or directory")
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


def _read_bytes(f: CorpusFile) -> bytes:
    opener = gzip.open if f.gzipped else open
    try:
        with opener(f.path, "rb") as fh:
            return fh.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise DataError(f"{f.path}: bad gzip data: {err}") from None
    except OSError as err:
        raise DataError(f"{f.path}: cannot read: {err.strerror or err}") from None


def _jsonl_texts(f: CorpusFile, raw: bytes, text_field: str, skip_bad: bool,
                 stats: ReadStats) -> Iterator[str]:
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        stats.records += 1
        text, replaced = decode_utf8(line)
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            problem = "not valid JSON"
        else:
            value = record.get(text_field) if isinstance(record, dict) else None
            if isinstance(value, str):
                yield _count_replaced(value, replaced, stats)
                continue
            problem = f"no string field {text_field!r}"
        if not skip_bad:
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


def read_documents(files: Sequence[CorpusFile], text_field: str = "text",
                   skip_bad_records: bool = False, stats: ReadStats | None = None,
                   progress: Callable[[int], object] | None = None) -> Iterator[str]:
    """Yield each document's text, in file order, counting in `stats`; `progress(f.size)`
    is called once a file has been read."""
    stats = stats if stats is not None else ReadStats()
    for f in files:
        raw = _read_bytes(f)
        stats.files += 1
        if f.kind == "text":
            stats.records += 1
            text, replaced = decode_utf8(raw)
            yield _count_replaced(text, replaced, stats)
        else:
            yield from _jsonl_texts(f, raw, text_field, skip_bad_records, stats)
        if progress is not None:
            progress(f.size)


def is_empty(text: str) -> bool:
    """Documents with nothing but whitespace are dropped."""
    return not text.strip()


# ---- PII redaction -------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_CARD = re.compile(r"(?<![\w-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"
                   r"|\d{4}([ -]?)\d{6}\2\d{5}|\d{13,19})(?![\w]|-\d)")
# Phone numbers: international (+CC ...), North American (555) 123-4567 / 555-123-4567, or
# national trunk-prefix style 030 1234567 / 020 7946 0958. Dates, versions and ISBNs do
# not have these shapes, which is what keeps them.
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,5}"
    r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"|0\d{1,4}[ /-]\d{3,8}(?:[ -]\d{3,4})?"
    r")(?![\w]|[.-]\d)")


def _card(m: re.Match) -> str | None:
    digits = re.sub(r"\D", "", m.group(0))
    total = 0  # the Luhn checksum, which real card numbers pass
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return "<CARD>" if digits[0] in "23456" and total % 10 == 0 else None


def _ipv6(m: re.Match) -> str | None:
    s = m.group(0)
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return None
    # "::", "a::b" and the like appear in code; a real address has digits and two groups.
    groups = [g for g in s.split(":") if g]
    return "<IP>" if len(groups) >= 2 and any(c.isdigit() for c in s) else None


def _phone(m: re.Match) -> str | None:
    n = sum(c.isdigit() for c in m.group(0))
    lo = 8 if m.group(0).startswith("+") else 9
    return "<PHONE>" if lo <= n <= 15 else None


_RULES = (  # order matters: e-mails can hold digits, cards look like phone numbers
    ("email", _EMAIL, lambda m: "<EMAIL>"),
    ("ip", _IPV6_CANDIDATE, _ipv6),
    ("ip", _IPV4, lambda m: "<IP>"),
    ("card", _CARD, _card),
    ("phone", _PHONE, _phone),
)
_QUICK = re.compile(r"@|\d|:")  # text without these cannot hold any PII we redact


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """`text` with e-mails, phones, IPs and Luhn-valid card numbers replaced, and counts."""
    counts = dict.fromkeys(PII_KINDS, 0)
    if not _QUICK.search(text):
        return text, counts
    for kind, pattern, replace in _RULES:
        def sub(m: re.Match, kind=kind, replace=replace) -> str:
            out = replace(m)
            if out is None:
                return m.group(0)
            counts[kind] += 1
            return out
        text = pattern.sub(sub, text)
    return text, counts


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
