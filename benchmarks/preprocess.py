"""Preprocessing throughput on a real corpus: the running Python's standard library.

    .venv/bin/python -m benchmarks.preprocess [--out DIR] [--vocab-size 8192]

1. one full run (`--workers 2`, BPE training included) makes the tokenizer;
2. `python -m hvdlm.preprocess --tokenizer-file ...` end to end, as a subprocess (start-up,
   reading, encoding, shards, manifest) with --workers 1 and 2;
3. the bare `Tokenizer.encode_batch` rate on the same documents' text, in this process (the
   faster of one call over all documents and ~512 kB batches).
Prints MB/s (of document text) for each and the ratio end-to-end / bare (goal >= 0.8), and
saves them as DIR/benchmark_preprocess.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from benchmarks import report
from hvdlm.text import corpus
from hvdlm.text.tokenizer import load_tokenizer


def stdlib_inputs() -> list[str]:
    """The standard library's top-level entries, without third-party site-packages."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [str(p) for p in sorted(root.iterdir()) if p.name not in ("site-packages",
                                                                     "dist-packages")]


def run_preprocess(inputs: list[str], out: Path, *extra: str) -> float:
    argv = [sys.executable, "-m", "hvdlm.preprocess", *inputs, "--out", str(out),
            "--overwrite", *extra]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"preprocess failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return seconds


def bare_rate(inputs: list[str], tokenizer: Path) -> tuple[int, float]:
    """(text bytes, seconds) of the faster of: one encode_batch over all documents, or
    encode_batch over ~512 kB batches as hvdlm feeds it - the stricter baseline."""
    files, _ = corpus.collect_files(inputs)
    texts = [t for t in corpus.read_documents(files) if not corpus.is_empty(t)]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    tok = load_tokenizer(tokenizer)
    tok.encode_batch(texts[:50])  # warm up HF's thread pool
    batches, size = [[]], 0
    for t in texts:
        batches[-1].append(t)
        size += len(t)
        if size >= 512 * 1024:
            batches.append([])
            size = 0
    start = time.perf_counter()
    tok.encode_batch(texts)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    for batch in batches:
        tok.encode_batch(batch)
    return n_bytes, min(whole, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.preprocess", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    p.add_argument("--vocab-size", type=int, default=8192)
    a = p.parse_args(argv)
    out = a.out or Path(tempfile.mkdtemp(prefix="hvdlm-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    inputs = stdlib_inputs()
    full = run_preprocess(inputs, out / "full", "--workers", "2", "--vocab-size",
                          str(a.vocab_size))
    made = json.loads((out / "full" / "preprocess_report.json").read_text())
    tok = out / "full" / "tokenizer.json"
    n_bytes, bare_s = bare_rate(inputs, tok)
    rows = {"full_run_with_bpe_training_workers2": full}
    for workers in (1, 2):
        rows[f"workers{workers}"] = run_preprocess(inputs, out / f"w{workers}", "--workers",
                                                   str(workers), "--tokenizer-file", str(tok))
    mbs = {k: n_bytes / 1e6 / s for k, s in rows.items()}
    bare = n_bytes / 1e6 / bare_s
    result = {
        "corpus": sysconfig.get_paths()["stdlib"], "documents": made["documents"],
        "text_mb": round(n_bytes / 1e6, 2), "tokens": made["tokens"],
        "seconds": {k: round(s, 2) for k, s in rows.items()} | {"bare": round(bare_s, 2)},
        "mb_per_s": ({k: round(v, 3) for k, v in mbs.items()}
                     | {"bare_encode_batch": round(bare, 3)}),
        "ratio_vs_bare": {k: round(v / bare, 3) for k, v in mbs.items()},
        "machine": report.machine_info(),
    }
    same = ((out / "w1" / "manifest.json").read_bytes()
            == (out / "w2" / "manifest.json").read_bytes())
    result["workers1_equals_workers2"] = same
    report.write(out, result, name="benchmark_preprocess")
    print(f"corpus: {result['corpus']} ({result['text_mb']} MB of text, "
          f"{result['documents']} documents, {result['tokens']} tokens)")
    for k, v in mbs.items():
        print(f"  {k:38s} {v:7.3f} MB/s  ({rows[k]:.1f} s, {v / bare:.2f}x bare)")
    print(f"  {'bare Tokenizer.encode_batch':38s} {bare:7.3f} MB/s  ({bare_s:.1f} s)")
    print(f"  workers 1 and 2 give identical manifests (shard sha256s): {same}")
    print(f"saved {out / 'benchmark_preprocess.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
