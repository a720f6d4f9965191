"""Untrusted corpora: a gzip bomb, a 2 GB single-line jsonl, a FIFO and a link to /dev/zero in
the input folder. Preprocessing streams past them: it finishes, counts what it skipped, and its
peak memory (the child's own rusage, workers included) stays far below what the files expand to.

    .venv/bin/python -m pytest tests/security/test_untrusted_corpus.py
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.security

GIB = 1 << 30
DOCS = [f"ordinary document {i}: the quick brown fox jumps over the lazy dog." for i in range(40)]


def _gzip_bomb(path: Path, expands_to: int) -> None:
    """One jsonl record whose text is `expands_to` bytes of 'a', then one normal record.

    Made of identical gzip members (a gzip file may hold many), so it costs seconds to write;
    readers see one stream.
    """
    block = 64 << 20
    member = gzip.compress(b"a" * block, compresslevel=9, mtime=0)
    with path.open("wb") as f:
        f.write(gzip.compress(b'{"text": "', mtime=0))
        for _ in range(expands_to // block):
            f.write(member)
        f.write(gzip.compress(b'"}\n' + json.dumps({"text": "after the bomb"}).encode() + b"\n",
                              mtime=0))


def _long_line(path: Path, size: int) -> None:
    with path.open("wb") as f:
        f.write(b'{"text": "')
        chunk = b"b" * (64 << 20)
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(b'"}')  # no newline: the file is one line


# Forks and execs the command from a fresh, small interpreter and writes the command's peak RSS
# (its rusage, which includes the worker processes it waited for) to argv[1]. Forked from
# pytest itself, the child's peak would include pytest's own memory, copied before the exec.
MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss * 1024))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def _run_measured(tmp_path: Path, *args) -> tuple[subprocess.CompletedProcess, int]:
    """Run python -m hvdlm.preprocess ARGS; its output and peak RSS in bytes."""
    peak = tmp_path / "peak-rss"
    proc = subprocess.run([sys.executable, "-c", MEASURE, peak, "-m", "hvdlm.preprocess",
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    return proc, int(peak.read_text())


def test_bombs_and_endless_files_are_skipped_in_bounded_memory(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    _gzip_bomb(corpus / "bomb.jsonl.gz", 10 * GIB)
    _long_line(corpus / "long.jsonl", 2 * GIB)
    os.mkfifo(corpus / "fifo.txt")  # reading it would wait for a writer forever
    (corpus / "zero.txt").symlink_to("/dev/zero")  # reading it would never end
    assert (corpus / "bomb.jsonl.gz").stat().st_size < 11 * 10**6

    out = tmp_path / "data"
    proc, peak = _run_measured(tmp_path, corpus, "--out", out, "--tokenizer", "byte")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "preprocess_report.json").read_text())
    assert report["oversize_documents"] == 2
    assert report["skipped"] == {"unsupported": 0, "not_regular": 1, "outside_input": 1}
    assert report["documents"] == len(DOCS) + 1  # the record after the bomb is read
    assert "2 documents over --max-document-bytes" in proc.stdout
    assert peak < GIB, f"peak RSS {peak / GIB:.2f} GiB"
    print(f"peak RSS {peak / 2**20:.0f} MiB")



def test_fifos_and_devices_are_not_read_even_when_named_or_linked(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    (corpus / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.jsonl")
    proc, _ = _run_measured(tmp_path, corpus, tmp_path / "fifo.jsonl", "--follow-symlinks",
                            "--out", tmp_path / "data", "--tokenizer", "byte")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "data" / "preprocess_report.json").read_text())
    assert report["skipped"] == {"unsupported": 0, "not_regular": 2, "outside_input": 0}
    assert report["documents"] == len(DOCS)


def test_zstd_bombs_are_skipped_in_bounded_memory(tmp_path):
    """A .jsonl.zst record and a .txt.zst document that expand to GiBs (many identical zstd
    frames: a few kB on disk), sane records around them: the bombs are skipped and counted,
    memory stays bounded. (A frame asking for a huge window: tests/text/test_formats.py.)"""
    import zstandard  # the formats extra, in the dev extra
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    cctx = zstandard.ZstdCompressor(level=3)
    frame = cctx.compress(b"a" * (64 << 20))
    with (corpus / "bomb.jsonl.zst").open("wb") as f:
        f.write(cctx.compress(b"".join(json.dumps({"text": d}).encode() + b"\n" for d in DOCS)
                              + b'{"text": "'))
        for _ in range(2 * GIB // (64 << 20)):
            f.write(frame)
        f.write(cctx.compress(b'"}\n' + json.dumps({"text": "after the bomb"}).encode()
                              + b"\n"))
    with (corpus / "bomb.txt.zst").open("wb") as f:
        for _ in range(GIB // 2 // (64 << 20)):
            f.write(frame)
    assert sum(p.stat().st_size for p in corpus.iterdir()) < 10**6

    out = tmp_path / "data"
    proc, peak = _run_measured(tmp_path, corpus, "--out", out, "--tokenizer", "byte")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "preprocess_report.json").read_text())
    assert report["oversize_documents"] == 2
    assert report["documents"] == len(DOCS) + 1  # the record after the bomb is read
    assert report["formats"] == {"jsonl.zst": {"files": 1, "documents": len(DOCS) + 1},
                                 "text.zst": {"files": 1, "documents": 0}}
    assert peak < GIB // 2, f"peak RSS {peak / GIB:.2f} GiB"
    print(f"peak RSS {peak / 2**20:.0f} MiB")
