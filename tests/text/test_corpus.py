"""hvdlm.corpus: file discovery, reading, invalid UTF-8, jsonl errors, PII, dedup, split."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from hvdlm.errors import DataError
from hvdlm.text import corpus
from hvdlm.text.corpus import ReadStats, collect_files, read_documents, redact_pii

MUST_REDACT = {
    "email": ["Contact john.smith@example.org today", "mail jane_doe+news@mail.co.uk."],
    "phone": ["Call +1 (415) 555-0132 now", "call 415-555-0198", "(212) 555-0147",
              "+44 20 7946 0958", "Berlin 030 12345678", "tel 415.555.0142"],
    "ip": ["at 192.168.1.20", "ssh 10.0.0.5.", "v6 2001:db8:85a3::8a2e:370:7334",
           "fe80::1ff:fe23:4567:890a", "2001:0db8:0000:0000:0000:ff00:0042:8329"],
    "card": ["card 4111 1111 1111 1111", "4012-8888-8888-1881", "5555555555554444",
             "Amex 3782 822463 10005"],
}
MUST_STAY = [
    "Python 3.11.7", "released 2024-01-15", "ISBN 978-3-16-148410-0", "ISBN 9783161484100",
    "in 5 minutes", "order #12345", "room 101", "time 12:30:45", "2024-01-15 10:30:00",
    "pi 3.14159", "x = a@b", "@decorator", "MAC 00:1a:2b:3c:4d:5e", "a[::2]",
    "std::vector<int>", "not Luhn 4111 1111 1111 1112", "zip 94105", "1,000,000",
    "version 1.2.3", "call 555-0100", "x = 1000 2000 3000", "2024/01/15", "15.01.2024",
    "id 1234567890123", "0x7f000001", "sha 3f786850e387550fdab836ed7e6dc881de23001b",
]
PLACEHOLDER = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "card": "<CARD>"}


@pytest.mark.parametrize("kind,text", [(k, t) for k, ts in MUST_REDACT.items() for t in ts])
def test_redacts_each_kind(kind, text):
    out, counts = redact_pii(text)
    assert PLACEHOLDER[kind] in out
    assert counts[kind] == 1 and sum(counts.values()) == 1
    assert sum(c.isdigit() for c in out) <= 1, out  # nothing of the number survives ("v6")


@pytest.mark.parametrize("text", MUST_STAY)
def test_near_misses_stay(text):
    assert redact_pii(text) == (text, dict.fromkeys(corpus.PII_KINDS, 0))


def test_redaction_in_running_text_counts_all():
    text = ("Hi, I'm Ann (ann@corp.example.com, +1 415-555-0111). Our VPN is 172.16.4.1, "
            "paid with 4242 4242 4242 4242 on 2024-01-15 using Python 3.11.7.")
    out, counts = redact_pii(text)
    assert counts == {"email": 1, "phone": 1, "ip": 1, "card": 1}
    assert "2024-01-15" in out and "3.11.7" in out and "@" not in out


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
    assert skipped == 2
    assert [(f.kind, f.gzipped) for f in files][3] == ("jsonl", True)


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
    assert list(read_documents(files, text_field="body", skip_bad_records=True)) == ["two"]


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
    assert list(read_documents(files, skip_bad_records=True, stats=stats)) == ["ok"]
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
