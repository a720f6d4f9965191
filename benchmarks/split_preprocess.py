"""One large jsonl: unsplit with 1 worker against split into pieces with 2 workers.

    .venv/bin/python -m benchmarks.split_preprocess [--mb 200] [--split-mb 16]
        [--tokenizer bpe|byte] [--out DIR]

Writes a jsonl of about --mb MB (documents of 0.3-6 kB, each unique) and, for `bpe` (the
default), trains a 4,096-token BPE on its first 5 MB once; then times
`python -m hvdlm.preprocess --tokenizer-file` (or `--tokenizer byte`, where reading, parsing
and writing dominate instead of encoding) end to end as a subprocess, three ways:

1. unsplit, --workers 1 (the parent reads and parses the whole file, one worker encodes);
2. unsplit, --workers 2 (the parent still reads the file alone; workers encode);
3. split at --split-mb, --workers 2 (each worker reads and parses its own pieces).

Checks that all three datasets are byte-identical (every file but the report), prints the
times and the ratio unsplit-1 / split-2, and saves DIR/benchmark_split_preprocess.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

from benchmarks import report
from benchmarks.preprocess import run_preprocess

OPTIONS = ["--val-fraction", "0.01", "--seed", "0"]  # run_preprocess adds --overwrite


def write_corpus(path: Path, mb: int) -> int:
    """About `mb` MB of jsonl; returns the number of documents."""
    rng = random.Random(0)
    words = [w for w in Path(__file__).read_text().split() if w.isalpha()] or ["word"]
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 1000)))
            for _ in range(997)]
    n, size = 0, 0
    with path.open("w") as f:
        while size < mb * 10**6:
            line = json.dumps({"id": n, "text": f"document {n}: {pool[n % len(pool)]}"}) + "\n"
            f.write(line)
            size += len(line)
            n += 1
    return n


def run(corpus: Path, out: Path, *extra: str) -> float:
    return run_preprocess([str(corpus)], out, *OPTIONS, *extra)


def dataset_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "preprocess_report.json"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.split_preprocess",
                                description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, default=200, help="corpus size in MB (default 200)")
    p.add_argument("--split-mb", type=int, default=16, help="--piece-bytes in MiB (default 16)")
    p.add_argument("--tokenizer", choices=("bpe", "byte"), default="bpe")
    p.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    a = p.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="hvdlm-bench-split-"))
    out.mkdir(parents=True, exist_ok=True)
    corpus = out / "big.jsonl"
    docs = write_corpus(corpus, a.mb)
    tok = ["--tokenizer", "byte"]
    if a.tokenizer == "bpe":
        with corpus.open("rb") as f:
            (out / "head.jsonl").write_bytes(b"".join(f.readlines(5 * 10**6)))
        run(out / "head.jsonl", out / "tok", "--vocab-size", "4096", "--workers", "2")
        tok = ["--tokenizer-file", str(out / "tok" / "tokenizer.json")]
    unsplit = [*tok, "--piece-bytes", str(1 << 50)]
    rows = {
        "unsplit_workers1": run(corpus, out / "u1", *unsplit, "--workers", "1"),
        "unsplit_workers2": run(corpus, out / "u2", *unsplit, "--workers", "2"),
        "split_workers2": run(corpus, out / "s2", *tok, "--piece-bytes",
                              str(a.split_mb << 20), "--workers", "2"),
    }
    reference = dataset_files(out / "u1")
    identical = {name: dataset_files(out / name) == reference for name in ("u2", "s2")}
    mb = corpus.stat().st_size / 1e6
    result = {
        "corpus_mb": round(mb, 1), "documents": docs, "tokenizer": a.tokenizer,
        "piece_bytes": a.split_mb << 20,
        "pieces": -(-corpus.stat().st_size // (a.split_mb << 20)),
        "seconds": {k: round(s, 2) for k, s in rows.items()},
        "mb_per_s": {k: round(mb / s, 2) for k, s in rows.items()},
        "speedup_split2_vs_unsplit1": round(rows["unsplit_workers1"] / rows["split_workers2"], 3),
        "speedup_split2_vs_unsplit2": round(rows["unsplit_workers2"] / rows["split_workers2"], 3),
        "byte_identical": identical,
        "cpus": len(os.sched_getaffinity(0)), "load_before": os.getloadavg()[0],
        "machine": report.machine_info(),
    }
    report.write(out, result, name="benchmark_split_preprocess")
    print(f"corpus: {result['corpus_mb']} MB jsonl, {docs} documents, {a.tokenizer} tokenizer, "
          f"{result['pieces']} pieces of {a.split_mb} MiB when split")
    for k, s in rows.items():
        print(f"  {k:18s} {s:7.1f} s  {mb / s:6.1f} MB/s")
    print(f"  split 2 workers vs unsplit 1 worker: {result['speedup_split2_vs_unsplit1']:.2f}x; "
          f"vs unsplit 2 workers: {result['speedup_split2_vs_unsplit2']:.2f}x")
    print(f"  byte-identical to unsplit 1 worker: {identical}")
    print(f"saved {out / 'benchmark_split_preprocess.json'}")
    return 0 if all(identical.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
