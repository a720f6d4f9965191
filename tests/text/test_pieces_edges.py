"""hvdlm.text.pieces at its edges, where the mutation run (scripts/mutation.sh pieces) found
changes no other test noticed: a whole file read with the defaults, a piece that starts inside
a line longer than one read, how far a reader reads, the dealing of sizes to owners, the
pieces of a file list and a parquet piece's row groups.

    .venv/bin/python -m pytest tests/text/test_pieces_edges.py
"""
from __future__ import annotations

import io

from hvdlm.text.formats import CorpusFile
from hvdlm.text.pieces import LineRange, Piece, parquet_groups, share, split_files


def test_the_defaults_read_the_whole_file_even_its_oversized_lines():
    data = b"x" * 50 + b"\nyy\n"
    assert list(LineRange(io.BytesIO(data)).lines(10)) == [(0, None), (51, b"yy\n")]


def test_a_piece_starting_inside_a_line_longer_than_one_read_finds_the_next_line():
    data = b"a" * 200_000 + b"\n" + b"b\n" * 10
    lines = list(LineRange(io.BytesIO(data), 1000, len(data)).lines(100))
    assert [line for _, line in lines] == [b"b\n"] * 10
    assert lines[0][0] == 200_001


def test_a_piece_with_no_line_start_reads_only_up_to_its_end():
    fh = io.BytesIO(b"x" * 100 + b"\n")
    assert list(LineRange(fh, 10, 50).lines(1000)) == []
    assert fh.tell() == 50


def test_skipping_an_oversized_line_stops_at_the_pieces_end():
    fh = io.BytesIO(b"x" * 30 + b"\n")
    assert list(LineRange(fh, 0, 12).lines(10)) == [(0, None)]
    assert fh.tell() == 12  # the next piece reads from there


def test_share_by_middles_and_a_last_empty_item():
    assert share([1, 9], 2) == [[0], [1]]          # the middles: 0.5 of 10, then 5.5
    assert share([5, 0], 2) == [[], [0, 1]]        # an empty item at the very end: last owner
    assert share([3, 3, 3], 1) == [[0, 1, 2]]


def test_split_files_and_parquet_groups():
    small, big = CorpusFile("s", 100, "jsonl"), CorpusFile("b", 700, "parquet")
    assert split_files([small, big], 300) == [Piece(small), Piece(big, 0, 3), Piece(big, 1, 3),
                                              Piece(big, 2, 3)]
    groups = [10, 10, 10, 10]
    assert [parquet_groups(Piece(big, i, 2), groups) for i in range(2)] == [[0, 1], [2, 3]]
    assert [parquet_groups(Piece(big, i, 3), groups) for i in range(3)] == [[0], [1, 2], [3]]


def test_lines_of_exactly_max_bytes_are_kept():
    assert list(LineRange(io.BytesIO(b"x" * 10)).lines(10)) == [(0, b"x" * 10)]   # at EOF
    assert list(LineRange(io.BytesIO(b"x" * 10 + b"\n")).lines(10)) == [(0, b"x" * 10 + b"\n")]


def test_an_oversized_last_line_without_newline_is_reported():
    assert list(LineRange(io.BytesIO(b"x" * 50)).lines(10)) == [(0, None)]
