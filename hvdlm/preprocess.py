"""Raw text to training data: corpus -> tokenizer.json -> HDF5 shards + manifest.json.

One machine (N worker processes encode batches; the parent writes):

    python -m hvdlm.preprocess corpus/ more.jsonl.gz --out data/ --workers 4 [--redact-pii]

K Slurm array tasks (see slurm/preprocess.sbatch), the same arguments in every step:

    python -m hvdlm.preprocess IN... --out data/ --num-tasks K --tokenizer-only   # once
    python -m hvdlm.preprocess IN... --out data/ --num-tasks K --task-index I     # I = 0..K-1
    python -m hvdlm.preprocess IN... --out data/ --num-tasks K --merge            # once

How the steps fit: everything is staged in `DIR.partial/` and renamed to DIR at the very end,
so DIR either does not exist or is complete. The tokenizer step writes `tokenizer.json` and
`plan.json` (the options and a fingerprint of the input file list). Task I takes a contiguous
run of the sorted input files (balanced by size), cleans and encodes them and writes
`parts/0000I-of-0000K/` (tokens.bin, docs.npz: per-document token count, UTF-8 bytes and a
16-byte text fingerprint). The merge concatenates the parts in task order - the global
document order - drops exact duplicates (--dedup, first kept), holds out val documents chosen
by (seed, text), packs shards and writes manifest.json last. A single run is exactly these
three steps with K = 1, which is why the dataset is identical for any --workers N and any K.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from hvdlm import cli, corpus
from hvdlm import preprocess_parts as pipeline
from hvdlm.corpus import CorpusFile, ReadStats
from hvdlm.errors import DataError, UsageError
from hvdlm.shards import Manifest, ShardWriter, dtype_for_vocab, save_manifest
from hvdlm.tokenizer import (build_byte_tokenizer, hf_to_json_bytes, load_tokenizer,
                             save_tokenizer_bytes, train_bpe)

PROG = "hvdlm.preprocess"
REPORT = "preprocess_report.json"
# Options that change the dataset; every step of an array job must agree on them.
PLAN_KEYS = ("inputs", "tokenizer", "vocab_size", "tokenizer_file", "tokenizer_sample_bytes",
             "shard_tokens", "val_fraction", "seed", "redact_pii", "dedup", "text_field",
             "skip_bad_records", "num_tasks")


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files and folders")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder to create")
    p.add_argument("--tokenizer", choices=("bpe", "byte"), default=None,
                   help="train a byte-level BPE (default) or use the 256-byte tokenizer")
    p.add_argument("--vocab-size", type=int, default=8192, metavar="N",
                   help="BPE vocabulary incl. end-of-text (default 8192)")
    p.add_argument("--tokenizer-file", metavar="FILE", help="reuse this tokenizer.json")
    p.add_argument("--tokenizer-sample-bytes", type=int, default=250_000_000, metavar="N",
                   help="train BPE on a seeded sample of at most N bytes (held in memory)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, metavar="N",
                   help="about N tokens per shard (default 100M)")
    p.add_argument("--val-fraction", type=float, default=0.01, metavar="F",
                   help="documents held out for val, 0..1 (default 0.01)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="encoding processes (default: the CPUs this process may use; "
                   "1: HF threads in this process)")
    p.add_argument("--task-index", type=int, metavar="I",
                   help="array step 2: encode task I's part of the corpus")
    p.add_argument("--num-tasks", type=int, default=1, metavar="K",
                   help="number of array tasks (same in every step)")
    step = p.add_mutually_exclusive_group()
    step.add_argument("--tokenizer-only", action="store_true",
                      help="array step 1: write the shared tokenizer and plan, then stop")
    step.add_argument("--merge", action="store_true",
                      help="array step 3: merge the K task parts into DIR")
    p.add_argument("--redact-pii", action="store_true",
                   help="replace e-mails, phones, IPs, card numbers by <EMAIL> etc.")
    p.add_argument("--dedup", action="store_true",
                   help="drop exact duplicate documents (after redaction), first kept")
    p.add_argument("--seed", type=int, default=0, help="chooses val documents, BPE sample")
    p.add_argument("--text-field", default="text", metavar="NAME",
                   help="jsonl field holding the text (default text)")
    p.add_argument("--skip-bad-records", action="store_true",
                   help="count and skip bad jsonl lines instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    return p


def check_args(a) -> None:
    if a.tokenizer_file and a.tokenizer:
        raise UsageError("--tokenizer-file and --tokenizer exclude each other")
    a.tokenizer = "file" if a.tokenizer_file else (a.tokenizer or "bpe")
    if a.workers is None:  # the output is the same for any N, so use what we are given
        a.workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    if a.tokenizer_file:
        a.tokenizer_file = os.path.abspath(a.tokenizer_file)
    if a.tokenizer == "bpe" and not 258 <= a.vocab_size <= 2**32:
        raise UsageError("--vocab-size must be at least 258 (256 bytes, end-of-text, a merge)")
    for name in ("shard_tokens", "workers", "num_tasks", "tokenizer_sample_bytes"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0.0 <= a.val_fraction <= 1.0:
        raise UsageError("--val-fraction must be between 0 and 1")
    if a.task_index is not None and not 0 <= a.task_index < a.num_tasks:
        raise UsageError(f"--task-index must be in 0..{a.num_tasks - 1} (--num-tasks)")
    if a.task_index is not None and (a.tokenizer_only or a.merge):
        raise UsageError("--task-index excludes --tokenizer-only and --merge")
    single = a.task_index is None and not a.tokenizer_only and not a.merge
    if single and a.num_tasks > 1:
        raise UsageError("--num-tasks K needs --tokenizer-only, --task-index or --merge")


def staging_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


@contextmanager
def removed_on_error(path: Path) -> Iterator[None]:
    """Delete `path` if the block fails, so no half-written output is left behind."""
    try:
        yield
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists (use --overwrite to replace it)")


def plan_of(a, files: Sequence[CorpusFile], skipped: int) -> dict:
    fingerprint = corpus.files_fingerprint(files)
    options = {k: getattr(a, k) for k in PLAN_KEYS}
    return {"options": options, "files": fingerprint, "n_files": len(files),
            "skipped_files": skipped, "started": time.time()}


def read_plan(stage: Path, a, files: Sequence[CorpusFile]) -> dict:
    try:
        plan = json.loads((stage / "plan.json").read_text())
    except OSError:
        raise DataError(f"{stage / 'plan.json'}: missing; run the tokenizer step first "
                        "(--tokenizer-only)") from None
    mine = {k: getattr(a, k) for k in PLAN_KEYS}
    differ = [k for k in PLAN_KEYS if json.dumps(plan["options"][k]) != json.dumps(mine[k])]
    if differ:
        raise UsageError("options differ from the tokenizer step's: "
                         + ", ".join("--" + k.replace("_", "-") for k in differ))
    if plan["files"] != corpus.files_fingerprint(files):
        raise DataError(f"{stage}: the input files changed since the tokenizer step")
    return plan


# ---- step 1: tokenizer ---------------------------------------------------------------------

def tokenizer_step(a, files: Sequence[CorpusFile], skipped: int, stage: Path) -> None:
    """Write DIR.partial/tokenizer.json and plan.json (a fresh staging folder)."""
    refuse_existing(Path(a.out), a.overwrite)
    shutil.rmtree(stage, ignore_errors=True)  # leftovers of an unfinished earlier run
    stage.mkdir(parents=True)
    with removed_on_error(stage):
        if a.tokenizer == "byte":
            data = hf_to_json_bytes(build_byte_tokenizer())
        elif a.tokenizer == "file":
            load_tokenizer(a.tokenizer_file)  # a clear error now, not in every task
            data = Path(a.tokenizer_file).read_bytes()
        else:
            # A list, not a generator: HF trains ~2x faster when it need not call back into
            # Python; the sample is bounded by --tokenizer-sample-bytes.
            texts = list(training_texts(a, files))
            data = hf_to_json_bytes(train_bpe(texts, a.vocab_size, length=len(texts)))
        save_tokenizer_bytes(data, stage / "tokenizer.json")
        (stage / "plan.json").write_text(json.dumps(plan_of(a, files, skipped), indent=1))


def training_texts(a, files: Sequence[CorpusFile]) -> Iterator[str]:
    """The train documents (after cleaning, dedup, val hold-out), or a seeded sample."""
    with pipeline.Pool(a.workers, None) as pool:
        scans = list(pool.map(pipeline.scan_job, batches(a, files, "scan"), a.redact_pii))
        digests = np.concatenate([s.digests for s in scans])
        n_bytes = np.concatenate([s.n_bytes for s in scans])
        if not len(digests):
            raise DataError(f"empty corpus: no non-empty documents in {' '.join(a.inputs)}")
        keep = corpus.first_occurrences(digests) if a.dedup else np.ones(len(digests), bool)
        train = keep.copy()
        train[keep] = ~corpus.choose_val(digests[keep], a.val_fraction, a.seed)
        if not train.any():  # --val-fraction 1: the vocabulary comes from the held-out text
            train = keep
        if n_bytes[train].sum() > a.tokenizer_sample_bytes:
            idx = np.flatnonzero(train)
            order = np.argsort(corpus.seeded_score(digests[idx], a.seed, salt=1), kind="stable")
            fits = np.cumsum(n_bytes[idx[order]]) <= a.tokenizer_sample_bytes
            train[:] = False
            train[idx[order[fits]]] = True
        i = 0
        for texts in pool.map(pipeline.clean_job, batches(a, files, None), a.redact_pii):
            for text in texts:
                if train[i]:
                    yield text
                i += 1


def batches(a, files: Sequence[CorpusFile], desc: str | None,
            stats: ReadStats | None = None) -> Iterator[list[str]]:
    """The documents of `files` in batches of about 512 kB, with a bytes/s bar on stderr."""
    bar = tqdm(total=sum(f.size for f in files), unit="B", unit_scale=True, desc=desc,
               file=sys.stderr, disable=desc is None, mininterval=0.5 if sys.stderr.isatty()
               else 30, dynamic_ncols=True)
    docs = corpus.read_documents(files, a.text_field, a.skip_bad_records, stats, bar.update)
    try:
        batch, size = [], 0
        for text in docs:
            batch.append(text)
            size += len(text)
            if size >= 512 * 1024 or len(batch) >= 512:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch
    finally:
        bar.close()


# ---- step 2: one task's part ---------------------------------------------------------------

def task_files(files: Sequence[CorpusFile], task: int, num_tasks: int) -> list[CorpusFile]:
    """Task `task`'s contiguous run of files: the file whose middle byte falls in its K-th."""
    total = sum(f.size for f in files) or 1
    out, before = [], 0
    for f in files:
        owner = min(num_tasks - 1, int(num_tasks * (before + f.size / 2) / total))
        before += f.size
        if owner == task:
            out.append(f)
    return out


def task_step(a, files: Sequence[CorpusFile], stage: Path, task: int) -> None:
    """Clean and encode this task's files into DIR.partial/parts/<task>-of-<K>/."""
    plan = read_plan(stage, a, files)
    tok = load_tokenizer(stage / "tokenizer.json")
    part = stage / "parts" / f"{task:05d}-of-{a.num_tasks:05d}"
    tmp = part.with_name(part.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(part, ignore_errors=True)  # a re-run array task replaces its part
    tmp.mkdir(parents=True)
    start, stats = time.time(), ReadStats()
    mine = task_files(files, task, a.num_tasks)
    with removed_on_error(tmp):
        writer = pipeline.PartWriter(tmp, dtype_for_vocab(tok.vocab_size))
        desc = f"task {task}/{a.num_tasks}" if a.num_tasks > 1 else "encode"
        with pipeline.Pool(a.workers, str(stage / "tokenizer.json")) as pool:
            for enc in pool.map(pipeline.encode_job, batches(a, mine, desc, stats),
                                a.redact_pii):
                writer.add(enc)
        writer.close({"task": task, "num_tasks": a.num_tasks, "files": plan["files"],
                      "tokenizer_sha256": tok.sha256, "read": stats.__dict__,
                      "input_bytes": sum(f.size for f in mine), "workers": a.workers,
                      "seconds": time.time() - start})
        os.replace(tmp, part)


# ---- step 3: merge -------------------------------------------------------------------------

def merge_step(a, files: Sequence[CorpusFile], stage: Path, started: float | None) -> dict:
    """Build DIR from the K parts: dedup, split, shards, manifest (last), report, rename."""
    plan = read_plan(stage, a, files)
    out = Path(a.out)
    refuse_existing(out, a.overwrite)
    tok = load_tokenizer(stage / "tokenizer.json")
    parts = [pipeline.load_part(stage / "parts" / f"{i:05d}-of-{a.num_tasks:05d}", tok.sha256,
                                plan["files"]) for i in range(a.num_tasks)]
    digests = np.concatenate([p.digests for p in parts])
    if not len(digests):
        raise DataError(f"empty corpus: no non-empty documents in {' '.join(a.inputs)}")
    keep = corpus.first_occurrences(digests) if a.dedup else np.ones(len(digests), bool)
    val = np.zeros(len(digests), bool)
    val[keep] = corpus.choose_val(digests[keep], a.val_fraction, a.seed)
    for p in (stage / "train", stage / "val"):
        shutil.rmtree(p, ignore_errors=True)  # a re-run merge starts its shards afresh
    writers = {s: ShardWriter(stage, s, a.shard_tokens, tok.vocab_size, tok.eos_id, tok.sha256)
               for s in ("train", "val")}
    first = 0
    for p in parts:
        tokens, ends = p.tokens(), np.cumsum(p.n_tokens)
        for j in np.flatnonzero(keep[first:first + len(p.n_tokens)]):
            split = "val" if val[first + j] else "train"
            writers[split].add(tokens[ends[j] - p.n_tokens[j]:ends[j]], int(p.n_bytes[j]))
        first += len(p.n_tokens)
    for w in writers.values():
        w.flush()
    save_manifest(Manifest(stage, "tokenizer.json", tok.vocab_size, tok.eos_id,
                           dtype_for_vocab(tok.vocab_size),
                           {s: w.shards for s, w in writers.items()}))
    report = pipeline.make_report(plan, parts, keep, val, tok, time.time() - (started or
                                                                             plan["started"]))
    (stage / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(stage / "parts")
    (stage / "plan.json").unlink()
    publish(stage, out)
    return report


def publish(stage: Path, out: Path) -> None:
    """Rename the finished staging folder to DIR (an old DIR is replaced only here)."""
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


# ---- command line --------------------------------------------------------------------------

def _main(argv: Sequence[str] | None) -> int:
    a = build_parser().parse_args(argv)
    check_args(a)
    started = time.time()
    files, skipped = corpus.collect_files(a.inputs)
    out = Path(a.out)
    stage = staging_dir(out)
    if a.tokenizer_only:
        tokenizer_step(a, files, skipped, stage)
        print(f"{PROG}: tokenizer and plan written to {stage}; now run the tasks")
    elif a.task_index is not None:
        task_step(a, files, stage, a.task_index)
        print(f"{PROG}: task {a.task_index} of {a.num_tasks} done")
    elif a.merge:
        print(pipeline.format_report(merge_step(a, files, stage, None), out))
    else:
        tokenizer_step(a, files, skipped, stage)
        with removed_on_error(stage):
            task_step(a, files, stage, 0)
            report = merge_step(a, files, stage, started)
        print(pipeline.format_report(report, out))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
