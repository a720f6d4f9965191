"""hvdlm.text.pieces: the pieces of a split file read every line exactly once, in order, and
only uncompressed jsonl/parquet files are split."""
from __future__ import annotations

import io
import random

import pytest

from hvdlm.text.formats import CorpusFile
from hvdlm.text.pieces import LineRange, Piece, share, split_file, task_pieces


class _Counting(io.BytesIO):
    """A file that counts the bytes read from it."""

    read_bytes = 0

    def readline(self, limit=-1):
        line = super().readline(limit)
        _Counting.read_bytes += len(line)
        return line


def _lines_of(data: bytes, piece: Piece, max_bytes: int) -> list[tuple[int, bytes | None]]:
    return list(LineRange(_Counting(data), *piece.bounds).lines(max_bytes))


def _expected(data: bytes, max_bytes: int) -> list[tuple[int, bytes | None]]:
    out, offset = [], 0
    for line in data.splitlines(keepends=True):
        fits = len(line) <= max_bytes or len(line) == max_bytes + 1 and line.endswith(b"\n")
        out.append((offset, line if fits else None))
        offset += len(line)
    return out


def _cases():
    rng = random.Random(7)
    yield b""
    yield b"\n\n\n"
    yield b"no newline at all " * 50
    yield b"x" * 300 + b"\n" + b"y\n" * 5  # one line longer than several pieces
    for _ in range(30):
        lines = [b"z" * rng.choice([0, 1, 2, 7, 40, 150]) for _ in range(rng.randint(1, 60))]
        yield b"\n".join(lines) + rng.choice([b"", b"\n"])


@pytest.mark.parametrize("data", list(_cases()))
def test_pieces_read_every_line_once_in_order(data):
    f = CorpusFile("f.jsonl", len(data), "jsonl")
    for max_bytes in (1 << 20, 100, 6):
        want = _expected(data, max_bytes)
        for piece_bytes in (1, 2, 3, 5, 16, 64, 1000):
            pieces = split_file(f, piece_bytes)
            assert len(pieces) == max(1, -(-len(data) // piece_bytes))
            _Counting.read_bytes = 0
            got = [line for p in pieces for line in _lines_of(data, p, max_bytes)]
            assert got == want, (max_bytes, piece_bytes)
            if max_bytes == 6:  # an oversized line is skipped once, not by every piece
                assert _Counting.read_bytes <= len(data) + len(pieces) * (max_bytes + 2)


def test_only_uncompressed_jsonl_and_parquet_are_split():
    def count(kind, compression=""):
        return len(split_file(CorpusFile("x", 1000, kind, compression), 300))
    assert count("jsonl") == count("parquet") == 4
    # One document per file: no boundary inside to cut at. Streams read from their start only.
    assert count("text") == count("code") == count("jsonl", "gz") == count("jsonl", "zst") == 1
    assert len(split_file(CorpusFile("x", 300, "jsonl"), 300)) == 1  # not over the threshold


def test_pieces_are_dealt_to_tasks_in_contiguous_runs():
    files = [CorpusFile(f"f{i}", size, "jsonl") for i, size in enumerate([50, 1000, 10, 400])]
    pieces = [p for f in files for p in split_file(f, 300)]
    for k in (1, 2, 3, 5, 20):
        runs = [task_pieces(pieces, t, k) for t in range(k)]
        assert [p for run in runs for p in run] == pieces  # every piece once, in order
    assert share([1, 1, 1, 1], 2) == [[0, 1], [2, 3]]
    assert share([0, 0], 3) == [[0, 1], [], []]
