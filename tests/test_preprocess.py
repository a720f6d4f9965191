"""python -m hvdlm.preprocess end to end on a mixed folder: exact recovery, counts, identical
output for any --workers and for K array tasks + merge, PII and dedup, bad input."""
from __future__ import annotations

import gzip
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvdlm.text.shards import load_manifest, open_tokens, read_doc_offsets
from hvdlm.text.tokenizer import load_tokenizer
from tests.conftest import ROOT, run_module, small_corpus
from tests.small_disk import needs_root, small_disk

BPE = ["--vocab-size", "300", "--val-fraction", "0.2", "--shard-tokens", "300", "--seed", "1"]
MANY = [f"record number {i}: the quick brown fox jumps over {i * 7} lazy dogs" for i in range(40)]
# Every non-empty document, in the order the corpus is read (folders sorted, files first).
DOCS = ["Hello world.\nSecond line: café, 日本語, 🎉 and a real \ufffd.\n",
        "# Title\n\nSome *markdown* with <|endoftext|> inside.\n",
        "ok \ufffd\ufffd then \ufffd( end\n",
        "def f(x):\n    return x * 2\n",
        "first record", "second record", "third record ünïcödé",
        *MANY,
        "compressed document\n" * 3,
        "notes " * 50,
        "gz record one", "gz record two"]


def _jsonl(records: list) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def make_corpus(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    files = {
        "a.txt": DOCS[0].encode(), "b.md": DOCS[1].encode(),
        "bad.txt": b"ok \xff\xfe then \xc3( end\n", "code.py": DOCS[3].encode(),
        "docs.jsonl": _jsonl([{"text": "first record"}]) + b"\n"
        + _jsonl([{"text": "second record", "id": 2}, {"text": "   "},
                  {"text": "third record ünïcödé"}]),
        "empty.txt": b"\n  \n", "image.png": bytes(range(256)) * 4,
        "sub/blob.bin": b"\x00\x01" * 100, "sub/many.jsonl": _jsonl([{"text": t} for t in MANY]),
        "sub/more.txt.gz": gzip.compress(DOCS[-4].encode()), "sub/notes.md": DOCS[-3].encode(),
        "sub/rec.jsonl.gz": gzip.compress(_jsonl([{"text": "gz record one"},
                                                   {"text": "gz record two"}])),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def read_dataset(out: Path) -> dict[str, list[str]]:
    """Decode every document of every split; check each ends with end-of-text."""
    m = load_manifest(out)
    tok = load_tokenizer(m.tokenizer_path)
    docs: dict[str, list[str]] = {}
    for split, shards in m.splits.items():
        docs[split] = []
        for s in shards:
            tokens, offsets = open_tokens(m.shard_path(s)), read_doc_offsets(m.shard_path(s))
            for a, b in zip(offsets[:-1], offsets[1:]):
                assert tokens[b - 1] == tok.eos_id
                docs[split].append(tok.decode(tokens[a:b - 1]))
    return docs


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "preprocess_report.json"}


def preprocess(*args, check=True):
    return run_module("hvdlm.preprocess", *args, check=check)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mixed")
    corpus = make_corpus(root / "corpus")
    preprocess(corpus, "--out", root / "w1", *BPE, "--workers", "1", check=True)
    return corpus, root / "w1"


def test_every_document_recovered_exactly(mixed):
    _, out = mixed
    docs = read_dataset(out)
    assert sorted(docs["train"] + docs["val"]) == sorted(DOCS)
    assert docs["train"] == [d for d in DOCS if d in docs["train"]]  # corpus order kept
    assert len(docs["val"]) == round(0.2 * len(DOCS))
    assert not list(out.parent.glob("*.partial"))
    assert run_module("hvdlm.verify", out, check=True).returncode == 0


def test_report_counts(mixed):
    _, out = mixed
    r = json.loads((out / "preprocess_report.json").read_text())
    m = load_manifest(out)
    assert (r["files"], r["skipped_files"], r["records"]) == (10, 2, 53)
    assert r["skipped"] == {"unsupported": 2, "not_regular": 0, "outside_input": 0}
    assert r["oversize_documents"] == 0
    assert (r["documents"], r["empty_documents"], r["bad_records"]) == (len(DOCS), 2, 0)
    assert (r["replaced_chars"], r["replaced_documents"], r["duplicates"]) == (3, 1, 0)
    assert r["bytes"] == sum(len(d.encode()) for d in DOCS)
    assert r["tokens"] == sum(s.n_tokens for ss in m.splits.values() for s in ss)
    assert r["val_documents"] == sum(s.n_docs for s in m.splits["val"])
    assert r["redacted"] == {"email": 0, "phone": 0, "ip": 0, "card": 0}
    assert len(m.splits["train"]) > 2  # --shard-tokens 300 gives several shards


def test_workers_2_gives_byte_identical_dataset(mixed, tmp_path):
    corpus, w1 = mixed
    proc = preprocess(corpus, "--out", tmp_path / "w2", *BPE, "--workers", "2")
    assert "documents" in proc.stdout and "encode" in proc.stderr  # summary and bar
    assert files_of(tmp_path / "w2") == files_of(w1)


def test_array_tasks_and_merge_equal_single_run(mixed, tmp_path):
    corpus, w1 = mixed
    out, k = tmp_path / "arr", ["--num-tasks", "3"]
    preprocess(corpus, "--out", out, *BPE, *k, "--tokenizer-only")
    for i in (2, 0):  # order of array tasks does not matter
        preprocess(corpus, "--out", out, *BPE, *k, "--task-index", i, "--workers", 1 if i else 2)
    early = preprocess(corpus, "--out", out, *BPE, *k, "--merge", check=False)
    assert early.returncode == 1 and "00001-of-00003: missing; array task 1" in early.stderr
    wrong = preprocess(corpus, "--out", out, *k, "--task-index", "1", check=False)
    assert wrong.returncode == 2 and "--val-fraction" in wrong.stderr
    preprocess(corpus, "--out", out, *BPE, *k, "--task-index", "1")
    preprocess(corpus, "--out", out, *BPE, *k, "--merge")
    assert files_of(out) == files_of(w1)
    assert not (tmp_path / "arr.partial").exists()


def test_existing_dir_refused_unless_overwrite(mixed, tmp_path):
    corpus, _ = mixed
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = (corpus, "--out", out, "--tokenizer", "byte")
    refused = preprocess(*args, check=False)
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert (out / "keep.txt").exists() and not (tmp_path / "d.partial").exists()
    for mine in (out, tmp_path / "notes.txt"):  # --overwrite replaces only a dataset
        mine.with_suffix(".txt").write_text("mine")
        refused = preprocess(corpus, "--out", mine, "--tokenizer", "byte", "--overwrite",
                             check=False)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1
        assert f"{mine}: not a dataset folder written by hvdlm.preprocess" in refused.stderr
    assert (out / "keep.txt").read_text() == "mine" == (tmp_path / "notes.txt").read_text()
    (out / "keep.txt").unlink()
    preprocess(*args)  # an empty folder is fine
    first = (out / "manifest.json").read_bytes()
    preprocess(corpus, "--out", out, "--tokenizer", "bpe", "--vocab-size", "300", "--overwrite")
    assert (out / "manifest.json").read_bytes() != first
    again = tmp_path / "again"  # --tokenizer-file: several datasets, one vocabulary
    preprocess(corpus, "--out", again, "--tokenizer-file", out / "tokenizer.json")
    assert (again / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    assert sorted(sum(read_dataset(again).values(), [])) == sorted(DOCS)


PII_DOCS = [
    "Contact john.smith@example.org or call +1 (415) 555-0132 about Python 3.11.7.",
    "Server 192.168.1.20 and 2001:db8:85a3::8a2e:370:7334, released 2024-01-15.",
    "Paid with 4111 1111 1111 1111; ISBN 978-3-16-148410-0; room 101; 415-555-0198.",
    "Reply to jane_doe+news@mail.co.uk, Amex 3782 822463 10005, +44 20 7946 0958.",
]
NEAR_MISSES = ["Python 3.11.7", "2024-01-15", "ISBN 978-3-16-148410-0", "room 101"]
LEAKS = [r"[\w.+-]+@[\w-]+\.\w", r"\d{3}[ .-]\d{4}", r"\d+\.\d+\.\d+\.\d+", r"\w+::\w+",
         r"\d{4} \d{4}", r"\d{4} \d{6}"]


def test_redact_pii_and_dedup(tmp_path):
    records = PII_DOCS + ["unique one", PII_DOCS[0], "unique two", "unique one", PII_DOCS[0]]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p.jsonl").write_bytes(_jsonl([{"text": t} for t in records]))
    out = tmp_path / "out"
    proc = preprocess(tmp_path / "in", "--out", out, "--tokenizer", "byte", "--redact-pii",
                      "--dedup", "--val-fraction", "0")
    docs = read_dataset(out)["train"]
    assert len(docs) == 6 and docs[4:] == ["unique one", "unique two"]  # first kept, in order
    text = "\n".join(docs)
    for pattern in LEAKS:
        assert not re.search(pattern, text), pattern
    for keep in NEAR_MISSES:
        assert keep in text
    r = json.loads((out / "preprocess_report.json").read_text())
    assert r["duplicates"] == 3 and r["documents"] == 6
    # Redaction runs before dedup: the two dropped copies of PII_DOCS[0] count too.
    assert r["redacted"] == {"email": 2 + 2, "phone": 3 + 2, "ip": 2, "card": 2}
    assert "redacted       email 4, phone 5, ip 2, card 2" in proc.stdout


def _bad_corpus(tmp_path: Path, case: str) -> list:
    d = tmp_path / "in"
    d.mkdir()
    (d / "ok.txt").write_text("fine text")
    if case == "missing":
        return [d, tmp_path / "nope"]
    if case == "unreadable":
        (d / "z.txt").symlink_to(d / "gone")
    elif case == "not-json":
        (d / "r.jsonl").write_bytes(_jsonl([{"text": "a"}]) + b"{oops\n")
    elif case == "no-field":
        (d / "r.jsonl").write_bytes(_jsonl([{"text": "a"}, {"body": "b"}]))
    elif case == "bad-gzip":
        (d / "t.txt.gz").write_bytes(gzip.compress(b"x" * 5000)[:25])
    elif case == "empty":
        (d / "ok.txt").write_text(" \n")
        (d / "e.jsonl").write_bytes(_jsonl([{"text": ""}]))
    elif case == "no-files":
        (d / "ok.txt").rename(d / "ok.csv")
    return [d]


@pytest.mark.parametrize("case,tokenizer,message", [
    ("missing", "bpe", r"nope: no such file or directory"),
    ("unreadable", "bpe", r"z\.txt: cannot read"),
    ("not-json", "bpe", r"r\.jsonl:2: not valid JSON"),
    ("not-json", "byte", r"r\.jsonl:2: not valid JSON"),
    ("no-field", "byte", r"r\.jsonl:2: no string field 'text'"),
    ("bad-gzip", "byte", r"t\.txt\.gz: bad gzip data"),
    ("empty", "bpe", r"empty corpus: no non-empty documents"),
    ("empty", "byte", r"empty corpus: no non-empty documents"),
    ("no-files", "bpe", r"empty corpus: no \.txt"),
])
def test_bad_input_one_line_and_no_dir(tmp_path, case, tokenizer, message):
    out = tmp_path / "out"
    proc = preprocess(*_bad_corpus(tmp_path, case), "--out", out, "--tokenizer", tokenizer,
                      "--vocab-size", "300", check=False)
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr
    assert re.search(r"^hvdlm\.preprocess: error: .*" + message, errors[0]), proc.stderr
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_skip_bad_records_counts(tmp_path):
    out = tmp_path / "out"
    preprocess(*_bad_corpus(tmp_path, "not-json"), "--out", out, "--tokenizer", "byte",
               "--skip-bad-records")
    r = json.loads((out / "preprocess_report.json").read_text())
    assert (r["bad_records"], r["documents"]) == (1, 2)


@pytest.mark.parametrize("args,message", [
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
    (["--num-tasks", "2", "--task-index", "2"], "--task-index must be in 0..1"),
    (["--num-tasks", "2"], "--num-tasks K needs"),
    (["--tokenizer", "byte", "--tokenizer-file", "t.json"], "exclude each other"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    (tmp_path / "a.txt").write_text("text")
    proc = preprocess(tmp_path / "a.txt", "--out", tmp_path / "out", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_val_fraction_one_and_zero(tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(5):
        (tmp_path / "in" / f"{i}.txt").write_text(f"document {i}")
    for frac, split in (("1", "val"), ("0", "train")):
        out = tmp_path / f"out{frac}"
        preprocess(tmp_path / "in", "--out", out, "--val-fraction", frac, "--vocab-size", "260")
        docs = read_dataset(out)
        assert sorted(docs[split]) == [f"document {i}" for i in range(5)]
        manifest = load_manifest(out)
        assert manifest.splits[{"val": "train", "train": "val"}[split]] == []
        # The BPE reached the requested size: 256 bytes + end-of-text + 3 merges, each of a pair
        # inside "document", which all five documents share: 10 bytes -> 7 tokens + end-of-text.
        tok = load_tokenizer(manifest.tokenizer_path)
        assert manifest.vocab_size == tok.vocab_size == 260 and not tok.is_byte
        assert [len(tok.encode(f"document {i}")) for i in range(5)] == [7] * 5
        assert sum(len(open_tokens(manifest.shard_path(s))) for s in manifest.splits[split]) \
            == 5 * 8


# ---- faults from outside: kill -9 while writing, a real full disk ----------------------------

def _many_documents(dest: Path) -> Path:
    """~1 MB of real text as ~1,200 jsonl documents: the encoding and the merge (one shard per
    few documents) each take long enough to be caught in the act."""
    src = small_corpus(dest.parent / "src", n_files=60)
    text = "".join(p.read_text() for p in sorted(src.iterdir())) * 2
    dest.mkdir()
    (dest / "docs.jsonl").write_bytes(_jsonl([{"text": text[i:i + 1000]}
                                              for i in range(0, len(text), 1000)]))
    return dest


def _kill_when(proc, condition, timeout: float = 60) -> None:
    """SIGKILL `proc` as soon as `condition()` holds; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if condition():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            return
        time.sleep(0.002)
    proc.kill()
    raise AssertionError(f"the process ended (exit {proc.wait()}) before the moment to kill it")


def test_killed_while_writing_the_part_or_the_shards_leaves_no_dataset(tmp_path):
    corpus = _many_documents(tmp_path / "corpus")
    out, stage = tmp_path / "data", tmp_path / "data.partial"
    args = [sys.executable, "-m", "hvdlm.preprocess", corpus, "--out", out, "--tokenizer",
            "byte", "--redact-pii", "--shard-tokens", "4000", "--workers", "1"]
    part = stage / "parts" / "00000-of-00001"
    moments = {  # what holds at the kill, wherever the files go: mid-encoding, then mid-merge
        "part": lambda: any(tmp_path.glob("data*/parts/*/tokens.bin")),
        "merge": lambda: any(tmp_path.glob("data*/train/*.h5")),
    }
    for moment, condition in moments.items():
        proc = subprocess.Popen(list(map(str, args)), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _kill_when(proc, condition)
        assert not out.exists(), moment
        assert (part.exists(), (stage / "manifest.json").exists()) == (moment == "merge", False)
    preprocess(*args[3:])
    assert not stage.exists() and run_module("hvdlm.verify", out).returncode == 0


@needs_root
@pytest.mark.parametrize("room,where", [(0.5, r"tokens\.bin"), (3.0, r"\.h5\.tmp\d+")])
def test_full_disk_is_one_line_and_leaves_nothing(room, where, tmp_path):
    """Room for half the encoded part (2 bytes a token), or for the part but not the shards."""
    corpus = small_corpus(tmp_path / "corpus")
    size = int(room * sum(p.stat().st_size for p in corpus.iterdir()))
    with small_disk(tmp_path / "disk", str(size)) as disk:
        proc = preprocess(corpus, "--out", disk / "data", "--tokenizer", "byte", "--workers", "1",
                          check=False)
        errors = [line for line in proc.stderr.splitlines() if "error" in line]
        assert proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr
        assert re.match(rf"hvdlm\.preprocess: error: {disk}/data\.partial/\S*{where}: "
                        r"cannot write \(No space left on device\)$", errors[0]), proc.stderr
        assert list(disk.iterdir()) == []


@needs_root
def test_full_disk_in_an_array_merge_keeps_the_parts_for_a_retry(tmp_path):
    corpus = small_corpus(tmp_path / "corpus")
    size = 3 * sum(p.stat().st_size for p in corpus.iterdir())  # the part fits, shards do not
    with small_disk(tmp_path / "disk", str(size)) as disk:
        args = [corpus, "--out", disk / "data", "--tokenizer", "byte", "--num-tasks", "1"]
        preprocess(*args, "--tokenizer-only")
        preprocess(*args, "--task-index", "0", "--workers", "1")
        proc = preprocess(*args, "--merge", check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert re.fullmatch(rf"hvdlm\.preprocess: error: {disk}/data\.partial/train/\S*\.h5\.tmp"
                            r"\d+: cannot write \(No space left on device\)\n", proc.stderr)
        assert not (disk / "data").exists()
        subprocess.run(["mount", "-o", f"remount,size={2 * size}", str(disk)], check=True)
        preprocess(*args, "--merge")  # the encoded part was kept: only the merge runs again
        assert run_module("hvdlm.verify", disk / "data").returncode == 0
