"""hvdlm.text.corpus: file discovery, bounded reading, invalid UTF-8, jsonl errors, dedup, split."""
from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from hvdlm.errors import DataError
from hvdlm.text import corpus
from hvdlm.text.corpus import ReadStats, collect_files, read_documents


def test_decode_utf8_counts_only_our_replacements():
    assert corpus.decode_utf8("fine \ufffd".encode()) == ("fine \ufffd", 0)
    text, n = corpus.decode_utf8(b"ok \xff\xfe then \xc3( \xef\xbf\xbd")
    assert text == "ok \ufffd\ufffd then \ufffd( \ufffd" and n == 3


def test_collect_files_order_and_skips(tmp_path):
    for name in ["b.txt", "a.md", "sub/z.py", "sub/y.jsonl.gz", "img.png", "sub/x.bin", "A.TXT"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    files, skipped = collect_files([str(tmp_path)])
    rel = [f.path[len(str(tmp_path)) + 1:] for f in files]
    assert rel == ["A.TXT", "a.md", "b.txt", "sub/y.jsonl.gz", "sub/z.py"]
    assert skipped == {"unsupported": 2, "not_regular": 0, "outside_input": 0}
    assert [(f.kind, f.gzipped) for f in files][3] == ("jsonl", True)


def test_fifos_devices_and_links_out_of_the_input_are_skipped(tmp_path):
    corpus_dir, outside = tmp_path / "corpus", tmp_path / "elsewhere"
    (corpus_dir / "sub").mkdir(parents=True)
    outside.mkdir()
    (corpus_dir / "a.txt").write_text("in")
    (outside / "secret.txt").write_text("not yours")
    os.mkfifo(corpus_dir / "pipe.txt")
    (corpus_dir / "zero.txt").symlink_to("/dev/zero")
    (corpus_dir / "out.txt").symlink_to(outside / "secret.txt")
    (corpus_dir / "outdir").symlink_to(outside)
    (corpus_dir / "sub" / "same.txt").symlink_to(corpus_dir / "a.txt")  # inside: followed
    (corpus_dir / "sub" / "loop").symlink_to(corpus_dir)  # inside, but already walked

    files, skipped = collect_files([str(corpus_dir)])
    assert [os.path.relpath(f.path, corpus_dir) for f in files] == ["a.txt", "sub/same.txt"]
    assert skipped == {"unsupported": 0, "not_regular": 1, "outside_input": 3}

    files, skipped = collect_files([str(corpus_dir)], follow_symlinks=True)
    assert sorted(os.path.relpath(f.path, corpus_dir) for f in files) == [
        "a.txt", "out.txt", "outdir/secret.txt", "sub/same.txt"]
    assert skipped == {"unsupported": 0, "not_regular": 2, "outside_input": 0}


def test_documents_over_the_cap_are_skipped_and_counted(tmp_path):
    big = "x" * 100
    _jsonl(tmp_path / "d.jsonl.gz", [json.dumps({"text": "ok"}), json.dumps({"text": big}),
                                     json.dumps({"text": "after"})], gz=True)
    (tmp_path / "e.txt.gz").write_bytes(gzip.compress(big.encode()))
    (tmp_path / "f.txt").write_text("small")
    (tmp_path / "g.jsonl").write_text(json.dumps({"text": big}))  # no final newline
    files, _ = collect_files([str(tmp_path)])
    stats = ReadStats()
    opts = corpus.ReadOptions(max_document_bytes=len(json.dumps({"text": "after"})) + 1)
    assert list(read_documents(files, opts, stats)) == ["ok", "after", "small"]
    assert (stats.records, stats.oversize) == (6, 3)
    assert len(list(read_documents(files, corpus.ReadOptions(max_document_bytes=120)))) == 6


def test_a_file_swapped_for_a_fifo_after_listing_is_refused_not_waited_on(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    files, _ = collect_files([str(tmp_path)])
    (tmp_path / "a.txt").unlink()
    os.mkfifo(tmp_path / "a.txt")
    with pytest.raises(DataError, match="a.txt: no longer a regular file"):
        list(read_documents(files))


def test_collect_files_errors(tmp_path):
    with pytest.raises(DataError, match="nope: no such file"):
        collect_files([str(tmp_path / "nope")])
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(DataError, match="data.csv: unsupported"):
        collect_files([str(tmp_path / "data.csv")])
    with pytest.raises(DataError, match="empty corpus"):
        collect_files([str(tmp_path)])
    (tmp_path / "gone.txt").symlink_to(tmp_path / "missing-target")
    with pytest.raises(DataError, match="gone.txt: cannot read"):
        collect_files([str(tmp_path)])


def _jsonl(path, lines: list[str], gz: bool = False) -> None:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def test_jsonl_and_gzip_reading(tmp_path):
    _jsonl(tmp_path / "r.jsonl.gz", [json.dumps({"text": "one"}), "",
                                      json.dumps({"body": "two", "text": "x\u00e9"})], gz=True)
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(b"zipped \xff text"))
    files, _ = collect_files([str(tmp_path)])
    stats = ReadStats()
    assert list(read_documents(files, stats=stats)) == ["one", "x\u00e9", "zipped \ufffd text"]
    assert (stats.files, stats.records, stats.replaced_chars, stats.replaced_docs) == (2, 3, 1, 1)
    files, _ = collect_files([str(tmp_path / "r.jsonl.gz")])
    body = corpus.ReadOptions(text_field="body", skip_bad_records=True)
    assert list(read_documents(files, body)) == ["two"]


def test_jsonl_bad_records_name_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    _jsonl(path, [json.dumps({"text": "ok"}), "", "{not json", json.dumps({"title": "t"})])
    files, _ = collect_files([str(path)])
    with pytest.raises(DataError, match=r"d\.jsonl:3: not valid JSON"):
        list(read_documents(files))
    _jsonl(path, [json.dumps({"text": "ok"}), json.dumps({"title": "t"})])
    with pytest.raises(DataError, match=r"d\.jsonl:2: no string field 'text'"):
        list(read_documents(files))
    _jsonl(path, ["[1, 2]", json.dumps({"text": "ok"}), "{bad", json.dumps({"text": None})])
    stats = ReadStats()
    skip = corpus.ReadOptions(skip_bad_records=True)
    assert list(read_documents(files, skip, stats)) == ["ok"]
    assert stats.bad_records == 3 and stats.records == 4


def test_lone_surrogates_from_json_escapes_are_replaced(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "a\\ud800b"}\n')
    stats = ReadStats()
    docs = list(read_documents(collect_files([str(path)])[0], stats=stats))
    assert docs == ["a\ufffdb"] and stats.replaced_chars == 1
    docs[0].encode("utf-8")  # encodable now


def test_truncated_gzip_is_a_data_error(tmp_path):
    (tmp_path / "t.txt.gz").write_bytes(gzip.compress(b"hello " * 1000)[:30])
    with pytest.raises(DataError, match="t.txt.gz: bad gzip data"):
        list(read_documents(collect_files([str(tmp_path)])[0]))


def test_clean_batch_drops_empty_and_redacts():
    batch = corpus.clean_batch(["", "  \n\t", "mail a.b@example.com", "plain"], redact=True)
    assert batch.texts == ["mail <EMAIL>", "plain"] and batch.empty == 2
    assert batch.redacted["email"] == 1


def _digests(texts: list[str]) -> np.ndarray:
    raw = b"".join(corpus.digest_bytes(t.encode()) for t in texts)
    return np.frombuffer(raw, np.uint8).reshape(len(texts), corpus.DIGEST_BYTES)


def test_first_occurrences_keeps_first_of_each():
    keep = corpus.first_occurrences(_digests(["a", "b", "a", "c", "b", "a"]))
    assert keep.tolist() == [True, True, False, True, False, False]


@pytest.mark.parametrize("n,f,want", [(100, 0.01, 1), (100, 0.1, 10), (50, 0.01, 1),
                                       (1, 0.5, 0), (10, 0.0, 0), (10, 1.0, 10), (2, 0.99, 1)])
def test_val_count(n, f, want):
    assert corpus.val_count(n, f) == want


def test_choose_val_deterministic_order_free_and_keeps_duplicates_together():
    texts = [f"doc {i}" for i in range(200)] + ["doc 5", "doc 7"]
    d = _digests(texts)
    val = corpus.choose_val(d, 0.1, seed=3)
    assert val.sum() - val[200:].sum() == 20  # 20 of 200 distinct texts
    assert val[200] == val[5] and val[201] == val[7]
    perm = np.random.default_rng(0).permutation(len(texts))
    assert (corpus.choose_val(d[perm], 0.1, seed=3) == val[perm]).all()
    assert (corpus.choose_val(d, 0.1, seed=3) == val).all()
    assert (corpus.choose_val(d, 0.1, seed=4) != val).any()
