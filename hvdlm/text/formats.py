"""Input formats: which files are a corpus, and how each is opened and streamed.

    .txt .md                     one document per file (text)
    .py .c .rs ... (code)        one document per file; the list is `--code-extensions`
    .jsonl                       one document per line, in a string field (`--text-field`)
    .parquet                     one document per row, in a string column (`--text-field`),
                                 read a batch of rows at a time (needs pyarrow)
    + .gz or .zst                any of the first three, compressed (.zst needs zstandard)

pyarrow and zstandard are optional: `pip install 'hvdlm[formats]'`. A corpus that needs one
that is missing is refused in one line before anything is read. Compressed streams are never
held whole: a decompressor hands out at most a bounded amount per read, so a document's size
is checked against `--max-document-bytes` however far a file expands.

Used by hvdlm/text/corpus.py (`python -m hvdlm.preprocess INPUT... --out DIR`).
"""
from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Sequence

from hvdlm.errors import DataError, UsageError

TEXT_SUFFIXES = (".txt", ".md")
DEFAULT_CODE_EXTENSIONS = (
    ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".cxx", ".hh", ".hpp", ".cu", ".java", ".kt",
    ".scala", ".go", ".rs", ".swift", ".cs", ".js", ".mjs", ".jsx", ".ts", ".tsx", ".rb", ".php",
    ".pl", ".lua", ".r", ".jl", ".hs", ".ml", ".f90", ".sh", ".sql", ".zig", ".dart")
COMPRESSIONS = {".gz": "gz", ".zst": "zst"}
RESERVED = (".jsonl", ".parquet", *TEXT_SUFFIXES, *COMPRESSIONS)
EXTRA = "pip install 'hvdlm[formats]'"
ZSTD_MAX_WINDOW = 1 << 27  # 128 MiB of decoder window at most (zstd's own default limit)
ZSTD_FEED = 1024  # compressed bytes per decompress call: at most ~32 MiB out (zstd's best ratio)


@dataclass(frozen=True)
class CorpusFile:
    """One input file: its path as the user will recognise it, its size on disk, its kind."""

    path: str
    size: int
    kind: str  # "text" | "code" | "jsonl" | "parquet"
    compression: str = ""  # "" | "gz" | "zst"

    @property
    def gzipped(self) -> bool:
        return self.compression == "gz"

    @property
    def format(self) -> str:
        """The name the report counts it under: text, code, jsonl, parquet, jsonl.zst, ..."""
        return f"{self.kind}.{self.compression}" if self.compression else self.kind


def parse_code_extensions(value: str) -> tuple[str, ...]:
    """`.py,.c,.rs` -> ('.py', '.c', '.rs'), lower case; an empty string reads no code."""
    exts = tuple(dict.fromkeys(e.strip().lower() for e in value.split(",") if e.strip()))
    for ext in exts:
        if not ext.startswith(".") or len(ext) < 2 or "/" in ext or "." in ext[1:]:
            raise UsageError(f"--code-extensions: {ext!r} is not an extension like .py")
        if ext in RESERVED:
            raise UsageError(f"--code-extensions: {ext} is a format of its own, not code")
    return exts


def file_kind(name: str, code_extensions: Sequence[str] = DEFAULT_CODE_EXTENSIONS
              ) -> tuple[str, str] | None:
    """(kind, compression) for a supported file name, else None."""
    base, ext = os.path.splitext(name.lower())
    compression = COMPRESSIONS.get(ext, "")
    if compression:
        base, ext = os.path.splitext(base)
    if ext in TEXT_SUFFIXES:
        return "text", compression
    if ext == ".jsonl":
        return "jsonl", compression
    if ext == ".parquet":
        return None if compression else ("parquet", "")  # compressed inside, by row group
    return ("code", compression) if ext in code_extensions else None


def describe(code_extensions: Sequence[str]) -> str:
    """The supported names, for error messages."""
    code = ", ".join(code_extensions[:4]) + (", ..." if len(code_extensions) > 4 else "")
    return (f".txt, .md, .jsonl, .parquet{', ' + code if code else ''} (--code-extensions), "
            "optionally .gz or .zst")


def _module(name: str):
    try:
        return __import__(name)
    except ImportError:
        return None


def require_extras(files: Sequence[CorpusFile]) -> None:
    """One line naming the first file whose format needs a package that is not installed."""
    needs = {"zst": "zstandard", "parquet": "pyarrow"}
    for f in files:
        for key in (f.compression, f.kind):
            if key in needs and _module(needs[key]) is None:
                raise DataError(f"{f.path}: reading {key} files needs {needs[key]}: {EXTRA}")


@contextmanager
def open_file(f: CorpusFile) -> Iterator[BinaryIO]:
    """The raw, seekable file; read errors are DataErrors."""
    try:
        # O_NONBLOCK: a file swapped for a FIFO since it was listed must not hang the open.
        fd = os.open(f.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as raw:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DataError(f"{f.path}: no longer a regular file")
            os.set_blocking(fd, True)
            yield raw
    except OSError as err:
        raise DataError(f"{f.path}: cannot read: {err.strerror or err}") from None


@contextmanager
def open_stream(f: CorpusFile) -> Iterator[BinaryIO]:
    """A buffered binary stream of `f`, decompressed if it is; bad data is a DataError."""
    with open_file(f) as raw:
        if not f.compression:
            yield raw
            return
        if f.compression == "gz":
            try:
                yield gzip.GzipFile(fileobj=raw)
            except (gzip.BadGzipFile, EOFError, zlib.error) as err:
                raise DataError(f"{f.path}: bad gzip data: {err}") from None
            return
        zstd = __import__("zstandard")
        try:
            yield io.BufferedReader(ZstdReader(raw, zstd), 1 << 20)
        except zstd.ZstdError as err:
            raise DataError(f"{f.path}: bad zstd data: {err}") from None


class ZstdReader(io.RawIOBase):
    """The decompressed bytes of every frame of a .zst stream.

    zstandard's own stream reader ends quietly at a truncated frame; this one raises
    ZstdError. Input goes in ZSTD_FEED bytes at a time, so one call never expands to more
    than a few tens of MiB, whatever the whole stream expands to.
    """

    def __init__(self, raw: BinaryIO, zstd) -> None:
        self._raw, self._zstd = raw, zstd
        self._dctx = zstd.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        self._obj = self._dctx.decompressobj()
        self._out, self._pos, self._in_frame = memoryview(b""), 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while self._pos >= len(self._out):
            data = b""
            if self._obj.eof:  # a frame ended: the rest of the input starts the next one
                data, self._obj = self._obj.unused_data, self._dctx.decompressobj()
                self._in_frame = False
            if not data:
                data = self._raw.read(ZSTD_FEED)
            if not data:
                if self._in_frame:
                    raise self._zstd.ZstdError("truncated: the stream ends inside a frame")
                return 0
            self._in_frame = True
            self._out, self._pos = memoryview(self._obj.decompress(data)), 0
        n = min(len(buf), len(self._out) - self._pos)
        buf[:n] = self._out[self._pos:self._pos + n]
        self._pos += n
        return n


# ---- parquet -------------------------------------------------------------------------------

PARQUET_BATCH_ROWS = 64  # rows decoded at a time


def parquet_reader(f: CorpusFile, raw: BinaryIO, text_field: str):
    """The ParquetFile of an open .parquet file; DataError if the file is not parquet or has no
    string column `text_field`."""
    pq = __import__("pyarrow.parquet").parquet
    pa = __import__("pyarrow")
    try:
        # buffer_size: column chunks are streamed page by page, not read whole.
        pf = pq.ParquetFile(raw, buffer_size=1 << 20, pre_buffer=False)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{f.path}: bad parquet data: {err}") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise DataError(f"{f.path}: no column {text_field!r} (--text-field; columns: "
                        f"{', '.join(names[:10])})")
    kind = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{f.path}: column {text_field!r} holds {kind}, not strings "
                        "(--text-field)")
    return pf


def parquet_cells(f: CorpusFile, pf, text_field: str, groups: Sequence[int],
                  max_bytes: int) -> Iterator[tuple[int, bytes | None | bool]]:
    """(row number, cell) for the rows of row groups `groups`: the UTF-8 bytes, None for a
    cell over `max_bytes`, False for a null."""
    pa = __import__("pyarrow")
    pc = __import__("pyarrow.compute").compute
    meta = pf.metadata
    for g in groups:
        row = sum(meta.row_group(i).num_rows for i in range(g))
        try:
            for batch in pf.iter_batches(PARQUET_BATCH_ROWS, row_groups=[g], columns=[text_field],
                                         use_threads=False):
                col = batch.column(0)
                # As bytes: our own UTF-8 decoding counts what it replaces, as for jsonl.
                col = col.cast(pa.large_binary() if pa.types.is_large_string(col.type)
                               else pa.binary())
                sizes = pc.binary_length(col).to_pylist()
                for i, size in enumerate(sizes):
                    if size is None:
                        yield row, False
                    else:
                        yield row, None if size > max_bytes else col[i].as_py()
                    row += 1
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"{f.path}: bad parquet data in row group {g}: {err}") from None
