"""Large files cut into pieces that workers and array tasks read on their own.

A file over `--piece-bytes` becomes n = ceil(size / piece-bytes) pieces, a function of its
size alone, so every array task and every worker agrees on them without reading anything:

- `.jsonl`: piece i is the byte range [size*i/n, size*(i+1)/n) and owns the lines that *start*
  in it. Its reader seeks to the range, skips to the first line start at or after it, and
  reads to the end of the last line that starts before its end. Every line is read by exactly
  one piece, and a line is a document, so the pieces in order are the file's documents in
  order.
- `.parquet`: pieces own whole row groups, chosen from the footer by where each row group's
  middle byte falls (by its size) among the n shares.
- Never split: `.txt`, `.md` and code files (one document each: there is no boundary inside
  to cut at) and compressed files (`.gz`, `.zst`: a stream can only be read from its start).

Pieces are then dealt to tasks as whole files were: contiguous runs in corpus order. The
merge concatenates parts in task order, so the documents come out in the same order as an
unsplit run's, and the dataset is byte-identical for any --piece-bytes, --workers and tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Iterator, Sequence

from hvdlm.text.formats import CorpusFile

SPLITTABLE = ("jsonl", "parquet")


@dataclass(frozen=True)
class Piece:
    """Piece `index` of `count` of a file (0 of 1: the whole file)."""

    file: CorpusFile
    index: int = 0
    count: int = 1

    @property
    def bounds(self) -> tuple[int, int]:
        """Its nominal byte range [start, end)."""
        size = self.file.size
        return size * self.index // self.count, size * (self.index + 1) // self.count

    @property
    def size(self) -> int:
        start, end = self.bounds
        return end - start


def split_file(f: CorpusFile, piece_bytes: int) -> list[Piece]:
    """`f`'s pieces: one unless it is an uncompressed jsonl or parquet over piece_bytes."""
    if f.kind not in SPLITTABLE or f.compression or f.size <= piece_bytes:
        return [Piece(f)]
    count = -(-f.size // piece_bytes)
    return [Piece(f, i, count) for i in range(count)]


def split_files(files: Sequence[CorpusFile], piece_bytes: int) -> list[Piece]:
    return [p for f in files for p in split_file(f, piece_bytes)]


def task_pieces(pieces: Sequence[Piece], task: int, num_tasks: int) -> list[Piece]:
    """Task `task`'s contiguous run of pieces: those whose middle byte falls in its K-th."""
    return [pieces[i] for i in share([p.size for p in pieces], num_tasks)[task]]


def share(sizes: Sequence[int], n: int) -> list[list[int]]:
    """Indices of `sizes` dealt to n owners in order: item i goes to the owner in whose n-th
    of the total its middle falls (contiguous runs; an owner may get none)."""
    total = sum(sizes) or 1
    owners: list[list[int]] = [[] for _ in range(n)]
    before = 0
    for i, size in enumerate(sizes):
        owners[min(n - 1, int(n * (before + size / 2) / total))].append(i)
        before += size
    return owners


def parquet_groups(piece: Piece, group_sizes: Sequence[int]) -> list[int]:
    """The row groups (by index) that `piece` reads, given every row group's size."""
    return share(group_sizes, piece.count)[piece.index]


class LineRange:
    """The lines of a seekable binary file that start in [start, end), through `readline`.

    The last one is read to its end even past `end`; `pos` is the offset of the next byte.
    """

    def __init__(self, fh: BinaryIO, start: int = 0, end: float = float("inf")) -> None:
        self._fh, self.pos, self.end = fh, start, end
        self._at_line_start, self._done = True, False
        if start > 0:
            fh.seek(start - 1)
            self.pos = start - 1
            while True:  # to the first line start >= start, reading no further than `end`
                chunk = fh.readline(self._upto_end(1 << 16))
                self.pos += len(chunk)
                if not chunk or not chunk.endswith(b"\n") and self.pos >= end:
                    self._done = True
                    break
                if chunk.endswith(b"\n"):
                    break

    def readline(self, limit: int = -1) -> bytes:
        if self._done or self._at_line_start and self.pos >= self.end:
            return b""
        line = self._fh.readline(limit)
        self.pos += len(line)
        self._at_line_start = line.endswith(b"\n")
        return line

    def lines(self, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
        """(byte offset, line) of each line, the line None if longer than `max_bytes`, holding
        at most that much. The rest of an oversized line is skipped only up to `end`: the
        next piece skips the rest, so no byte of a file is read twice, however long a line."""
        while True:
            offset = self.pos
            line = self.readline(max_bytes + 1)
            if not line:
                return
            if len(line) <= max_bytes or line.endswith(b"\n"):
                yield offset, line
                continue
            # Free it first: held while its rest is skipped, it makes every chunk read below
            # fresh pages from the kernel (20 GB of page faults for a 10 GiB line, measured).
            del line
            while not self._at_line_start:
                if self.pos >= self.end:  # any line after this one starts past the end
                    self._done = True
                    break
                if not self.readline(self._upto_end(1 << 20)):
                    break
            yield offset, None

    def _upto_end(self, most: int) -> int:
        """A read size: at most `most`, not past `end` (but at least 1)."""
        return most if self.end == float("inf") else min(most, max(1, int(self.end - self.pos)))
