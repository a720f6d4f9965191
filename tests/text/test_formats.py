"""hvdlm.text.formats through corpus.read_documents: source-code extensions, .zst streams
(several frames, truncation, oversized windows), parquet (row groups, pieces, nulls, wrong
columns), and the one-line refusal when the optional package is missing."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from hvdlm.errors import DataError, UsageError
from hvdlm.text import corpus, formats
from hvdlm.text.corpus import ReadStats, collect_files, read_documents
from hvdlm.text.pieces import split_files
from tests.conftest import ROOT


def test_code_extensions_default_and_chosen(tmp_path):
    for name in ["a.py", "b.c", "c.rs", "d.go", "e.TS", "f.xyz", "g.c.gz"]:
        (tmp_path / name).write_text(name)
    files, skipped = collect_files([str(tmp_path)])
    assert [(f.path[len(str(tmp_path)) + 1:], f.format) for f in files] == [
        ("a.py", "code"), ("b.c", "code"), ("c.rs", "code"), ("d.go", "code"),
        ("e.TS", "code"), ("g.c.gz", "code.gz")]
    assert skipped["unsupported"] == 1
    only = formats.parse_code_extensions(".RS, .xyz,")
    assert only == (".rs", ".xyz")
    files, skipped = collect_files([str(tmp_path)], code_extensions=only)
    assert [f.path.rsplit("/", 1)[1] for f in files] == ["c.rs", "f.xyz"]
    assert formats.parse_code_extensions("") == ()
    for bad in ("py", ".jsonl", ".tar.gz", "."):
        with pytest.raises(UsageError, match="--code-extensions"):
            formats.parse_code_extensions(bad)
    with pytest.raises(DataError, match=r"b\.c: unsupported file type"):
        collect_files([str(tmp_path / "b.c")], code_extensions=only)


def _records(texts: list[str]) -> bytes:
    return b"".join(json.dumps({"text": t}).encode() + b"\n" for t in texts)


def test_zst_streams_every_frame_and_refuses_broken_ones(tmp_path):
    cctx = zstandard.ZstdCompressor()
    frames = cctx.compress(_records(["one", "two"])) + cctx.compress(_records(["three"]))
    (tmp_path / "a.jsonl.zst").write_bytes(frames)
    (tmp_path / "b.txt.zst").write_bytes(cctx.compress("zipped \u00e9".encode()))
    stats = ReadStats()
    assert list(read_documents(collect_files([str(tmp_path)])[0], stats=stats)) == [
        "one", "two", "three", "zipped \u00e9"]
    assert stats.formats == {"jsonl.zst": {"files": 1, "documents": 3},
                             "text.zst": {"files": 1, "documents": 1}}

    big = cctx.compress(_records([f"record {i}" for i in range(20000)]))
    (tmp_path / "a.jsonl.zst").write_bytes(big[:len(big) // 2])  # cut inside the frame
    with pytest.raises(DataError, match=r"a\.jsonl\.zst: bad zstd data: truncated"):
        list(read_documents(collect_files([str(tmp_path / "a.jsonl.zst")])[0]))

    # A frame that asks for a 1 GiB window: refused before any memory is given to it.
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=30)
    writer = zstandard.ZstdCompressor(compression_params=params).stream_writer(
        (tmp_path / "w.jsonl.zst").open("wb"))
    writer.write(_records(["x"]))
    writer.close()
    with pytest.raises(DataError, match=r"w\.jsonl\.zst: bad zstd data: .*too much memory"):
        list(read_documents(collect_files([str(tmp_path / "w.jsonl.zst")])[0]))


def _parquet(path, texts, row_group_size=3, **columns):
    table = pa.table({"text": pa.array(texts, pa.string()), **columns})
    pq.write_table(table, path, row_group_size=row_group_size)


def test_parquet_rows_by_row_group_and_in_pieces(tmp_path):
    texts = [f"row {i} " + "w" * (i * 37 % 300) for i in range(40)]
    path = tmp_path / "t.parquet"
    _parquet(path, texts, id=pa.array(range(40)))
    assert pq.ParquetFile(path).metadata.num_row_groups == 14
    files, _ = collect_files([str(path)])
    stats = ReadStats()
    assert list(read_documents(files, stats=stats)) == texts
    assert stats.formats == {"parquet": {"files": 1, "documents": 40}}
    for piece_bytes in (100, 700, 3000):
        pieces = split_files(files, piece_bytes)
        assert len(pieces) > 1
        per_piece = [list(read_documents([p])) for p in pieces]
        assert [t for docs in per_piece for t in docs] == texts
        assert sum(1 for docs in per_piece if docs) > 1  # the rows really are shared out
    capped = corpus.ReadOptions(max_document_bytes=200)
    stats = ReadStats()
    assert list(read_documents(files, capped, stats)) == [t for t in texts if len(t) <= 200]
    assert stats.oversize == sum(len(t) > 200 for t in texts)


def test_parquet_bad_columns_and_nulls(tmp_path):
    path = tmp_path / "n.parquet"
    _parquet(path, ["a", None, "b"])
    files, _ = collect_files([str(path)])
    with pytest.raises(DataError, match=r"n\.parquet: row 1: null in column 'text'"):
        list(read_documents(files))
    stats = ReadStats()
    assert len(list(read_documents(files, corpus.ReadOptions(skip_bad_records=True), stats))) == 2
    assert stats.bad_records == 1
    with pytest.raises(DataError, match=r"n\.parquet: no column 'body' \(--text-field; columns: "
                                        "text"):
        list(read_documents(files, corpus.ReadOptions(text_field="body")))
    pq.write_table(pa.table({"text": pa.array([1, 2])}), path)
    with pytest.raises(DataError, match=r"column 'text' holds int64, not strings"):
        list(read_documents(collect_files([str(path)])[0]))
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"n\.parquet: bad parquet data"):
        list(read_documents(collect_files([str(path)])[0]))


@pytest.mark.parametrize("module,name", [("pyarrow", "t.parquet"), ("zstandard", "t.jsonl.zst")])
def test_missing_extra_is_one_line_naming_it(tmp_path, module, name):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    (corpus_dir / "ok.txt").write_text("fine")
    (corpus_dir / name).write_bytes(b"whatever")
    # The package made unimportable in the child, as if the extra were not installed.
    code = (f"import sys; sys.modules[{module!r}] = None; from hvdlm.preprocess import main; "
            f"sys.exit(main([{str(corpus_dir)!r}, '--out', {str(tmp_path / 'data')!r}, "
            "'--tokenizer', 'byte']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"hvdlm.preprocess: error: {corpus_dir / name}: reading "
        f"{'zst' if module == 'zstandard' else 'parquet'} files needs {module}: "
        "pip install 'hvdlm[formats]'"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.partial").exists()
