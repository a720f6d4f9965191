"""python -m hvdlm.preprocess end to end on the new inputs: the same texts as parquet, as
.jsonl.zst and as jsonl give the same dataset; a jsonl split into pieces (--piece-bytes) gives
the dataset of an unsplit run byte for byte, with 2 workers and with 3 array tasks; a bad
record in a later piece is one line and leaves nothing behind."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from tests.conftest import run_module
from tests.test_preprocess import files_of, read_dataset

OPTIONS = ["--tokenizer", "byte", "--val-fraction", "0.1", "--shard-tokens", "300000",
           "--seed", "3"]
SPLIT = ["--piece-bytes", "1000000"]


def texts(n: int, seed: int = 0) -> list[str]:
    """Documents of mixed lengths (a few over 1 kB), some non-ASCII, some duplicated."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "δέλτα", "ε", "zeta", "ηθ", "iota", "日本", "🎉", "\n"]
    out = [f"doc {i}: " + " ".join(rng.choice(words) for _ in range(rng.choice([2, 20, 300])))
           for i in range(n)]
    return out + out[:3]


def write_jsonl(path: Path, docs: list[str], blank_every: int = 0) -> Path:
    with path.open("w") as f:
        for i, t in enumerate(docs):
            f.write(json.dumps({"id": i, "text": t}) + "\n")
            if blank_every and i % blank_every == 0:
                f.write("\n")
    return path


def preprocess(*args, check=True):
    return run_module("hvdlm.preprocess", *map(str, args), check=check, timeout=240)


def test_parquet_and_zst_give_the_jsonl_dataset(tmp_path):
    docs = texts(600)
    (tmp_path / "j").mkdir()
    (tmp_path / "p").mkdir()
    (tmp_path / "z").mkdir()
    write_jsonl(tmp_path / "j" / "docs.jsonl", docs)
    pq.write_table(pa.table({"text": docs, "n": list(range(len(docs)))}),
                   tmp_path / "p" / "docs.parquet", row_group_size=64)
    raw = (tmp_path / "j" / "docs.jsonl").read_bytes()
    half = raw.index(b"\n", len(raw) // 2) + 1  # two frames, as pzstd and others write
    cctx = zstandard.ZstdCompressor(level=3)
    (tmp_path / "z" / "docs.jsonl.zst").write_bytes(cctx.compress(raw[:half])
                                                   + cctx.compress(raw[half:]))
    for name in "jpz":
        preprocess(tmp_path / name, "--out", tmp_path / f"out-{name}", *OPTIONS)
    # parquet once more, read in pieces of a few row groups by 2 workers
    preprocess(tmp_path / "p", "--out", tmp_path / "out-p2", *OPTIONS, "--workers", "2",
               "--piece-bytes", "20000")
    reference = files_of(tmp_path / "out-j")
    assert any(name.endswith(".h5") for name in reference)
    for name in ("out-p", "out-z", "out-p2"):
        assert files_of(tmp_path / name) == reference, name
    data = read_dataset(tmp_path / "out-p")
    assert sorted(data["train"] + data["val"]) == sorted(docs)
    report = json.loads((tmp_path / "out-z" / "preprocess_report.json").read_text())
    assert report["formats"] == {"jsonl.zst": {"files": 1, "documents": len(docs)}}
    report = json.loads((tmp_path / "out-p2" / "preprocess_report.json").read_text())
    assert report["formats"] == {"parquet": {"files": 1, "documents": len(docs)}}


def big_jsonl(path: Path) -> Path:
    """About 5 MB of jsonl, blank lines included: several 1 MB pieces."""
    write_jsonl(path, texts(5000, seed=1), blank_every=89)
    assert 4_000_000 < path.stat().st_size < 7_000_000
    return path


def test_split_file_gives_the_unsplit_dataset_for_workers_and_tasks(tmp_path):
    corpus = big_jsonl(tmp_path / "big.jsonl")
    (tmp_path / "small.txt").write_text("a small file after the big one")
    inputs = [corpus, tmp_path / "small.txt"]
    single = preprocess(*inputs, "--out", tmp_path / "single", *OPTIONS, "--workers", "1",
                        "--piece-bytes", str(1 << 30))
    assert "jsonl 1 files / 5003 documents, text 1 files / 1 documents" in single.stdout
    preprocess(*inputs, "--out", tmp_path / "w2", *OPTIONS, *SPLIT, "--workers", "2")
    array = [*OPTIONS, *SPLIT, "--num-tasks", "3", "--workers", "1"]
    preprocess(*inputs, "--out", tmp_path / "k3", *array, "--tokenizer-only")
    for task in range(3):
        preprocess(*inputs, "--out", tmp_path / "k3", *array, "--task-index", task)
    preprocess(*inputs, "--out", tmp_path / "k3", *array, "--merge")

    reference = files_of(tmp_path / "single")
    for name in ("w2", "k3"):
        assert files_of(tmp_path / name) == reference, name
    reports = {name: json.loads((tmp_path / name / "preprocess_report.json").read_text())
               for name in ("single", "w2", "k3")}
    counted = ("documents", "records", "files", "input_bytes", "formats", "duplicates")
    for name in ("w2", "k3"):
        assert {k: reports[name][k] for k in counted} == {k: reports["single"][k]
                                                          for k in counted}


def test_split_file_trains_the_same_bpe(tmp_path):
    """The tokenizer step reads pieces in workers too (scan, then the training texts), each
    piece in several batches (over 512 documents)."""
    corpus = write_jsonl(tmp_path / "docs.jsonl", texts(3000, seed=2), blank_every=50)
    bpe = ["--vocab-size", "300", "--val-fraction", "0.2", "--seed", "1"]
    preprocess(corpus, "--out", tmp_path / "single", *bpe, "--workers", "1")
    preprocess(corpus, *bpe, "--out", tmp_path / "split", "--workers", "2", *SPLIT)
    assert files_of(tmp_path / "split") == files_of(tmp_path / "single")


def test_a_bad_record_in_a_later_piece_is_one_line_and_no_output(tmp_path):
    corpus = big_jsonl(tmp_path / "big.jsonl")
    data = bytearray(corpus.read_bytes())
    at = data.index(b"\n", 3_000_000) + 1
    corpus.write_bytes(bytes(data[:at]) + b"{broken\n" + bytes(data[at:]))
    proc = preprocess(corpus, "--out", tmp_path / "out", *OPTIONS, *SPLIT, "--workers", "2",
                      check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"hvdlm.preprocess: error: {corpus}: line at byte {at}: not valid JSON "
        "(--skip-bad-records to skip)")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    proc = preprocess(corpus, "--out", tmp_path / "out", *OPTIONS, *SPLIT, "--piece-bytes",
                      "-1", check=False)
    assert proc.returncode == 2 and "--piece-bytes must be at least 1" in proc.stderr
    proc = preprocess(corpus, "--out", tmp_path / "out", "--code-extensions", ".py,rs",
                      check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "hvdlm.preprocess: error: --code-extensions: 'rs' is not an extension like .py")
