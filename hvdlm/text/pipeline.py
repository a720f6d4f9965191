"""The three preprocessing steps: tokenizer, one task's part, merge (`hvdlm.preprocess`).

Everything is staged in `DIR.partial/` and renamed to DIR at the very end, so DIR either does
not exist or is complete (hvdlm/output.py; the steps may run in different processes). The
tokenizer step writes `tokenizer.json` and `plan.json` (the options and a fingerprint of the
input file list). Task I takes a contiguous run of the sorted input files (balanced by size;
files over --piece-bytes count as several pieces, see hvdlm/text/pieces.py), cleans and encodes
them and writes `parts/0000I-of-0000K/` (tokens.bin, docs.npz: per-document token count, UTF-8
bytes and a 16-byte text fingerprint). The merge concatenates the parts in task order - the
global document order - drops exact duplicates (dedup, first kept), holds out val documents
chosen by (seed, text), packs shards and writes manifest.json last. A single run is exactly
these three steps with K = 1, which is why the dataset is identical for any number of workers
and any K.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from hvdlm import bars, output
from hvdlm.errors import DataError, UsageError
from hvdlm.text import corpus, dupcounts, pieces, workers
from hvdlm.text.canaries import CanarySpec, Inserter
from hvdlm.text.corpus import CorpusFile, ReadStats
from hvdlm.text.formats import DEFAULT_CODE_EXTENSIONS
from hvdlm.text.pii import PII_KINDS
from hvdlm.text.shards import MANIFEST, Manifest, ShardWriter, dtype_for_vocab, save_manifest
from hvdlm.text.tokenizer import (Tokenizer, build_byte_tokenizer, hf_to_json_bytes, load_tokenizer,
                                  train_bpe)

REPORT = "preprocess_report.json"


@dataclass(frozen=True)
class PreprocessOptions:
    """What a preprocessing run makes; every step of an array job must agree on `plan()`."""

    inputs: tuple[str, ...]
    out: str
    tokenizer: str                      # bpe | byte | file (then tokenizer_file)
    vocab_size: int
    tokenizer_file: str | None          # an absolute path
    tokenizer_sample_bytes: int
    shard_tokens: int
    val_fraction: float
    seed: int
    redact_pii: bool
    dedup: bool
    text_field: str
    skip_bad_records: bool
    max_document_bytes: int
    follow_symlinks: bool
    num_tasks: int
    workers: int                        # does not change the dataset
    overwrite: bool                     # nor does this
    code_extensions: tuple[str, ...] = DEFAULT_CODE_EXTENSIONS  # source files read as text
    piece_bytes: int = 16 << 20         # files over this are read in pieces (not in output)
    canaries: CanarySpec | None = None  # secrets planted in train (hvdlm/text/canaries.py)

    def __post_init__(self) -> None:
        if self.tokenizer not in ("bpe", "byte", "file"):
            raise UsageError(f"--tokenizer must be bpe or byte, not {self.tokenizer!r}")
        if (self.tokenizer == "file") != (self.tokenizer_file is not None):
            raise UsageError("--tokenizer-file and --tokenizer exclude each other")
        if self.tokenizer == "bpe" and not 258 <= self.vocab_size <= 2**32:
            raise UsageError("--vocab-size must be at least 258 (256 bytes, end-of-text, a "
                             "merge)")
        for name in ("shard_tokens", "workers", "num_tasks", "tokenizer_sample_bytes",
                     "max_document_bytes", "piece_bytes"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.val_fraction <= 1.0:
            raise UsageError("--val-fraction must be between 0 and 1")

    def plan(self) -> dict[str, Any]:
        """The options that change the dataset, as plan.json records them."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()
                if k not in ("out", "workers", "overwrite")
                and not (k == "canaries" and v is None)}  # plans from before --canaries

    def replaces(self) -> output.Overwrite:
        """What --overwrite may replace: a dataset (one with a manifest.json)."""
        return output.Overwrite(self.overwrite, MANIFEST,
                                "a dataset folder written by hvdlm.preprocess")


def read_plan(stage: Path, opts: PreprocessOptions, files: Sequence[CorpusFile]) -> dict:
    try:
        plan = json.loads((stage / "plan.json").read_text())
    except OSError:
        raise DataError(f"{stage / 'plan.json'}: missing; run the tokenizer step first "
                        "(--tokenizer-only)") from None
    mine = opts.plan()
    differ = [k for k in mine if json.dumps(plan["options"].get(k)) != json.dumps(mine[k])]
    if differ:
        raise UsageError("options differ from the tokenizer step's: "
                         + ", ".join("--" + k.replace("_", "-") for k in differ))
    if plan["files"] != corpus.files_fingerprint(files):
        raise DataError(f"{stage}: the input files changed since the tokenizer step")
    return plan


def keep_and_val(opts: PreprocessOptions, digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks over all documents: kept by dedup, and (of those) held out for val."""
    if not len(digests):
        raise DataError(f"empty corpus: no non-empty documents in {' '.join(opts.inputs)}")
    keep = corpus.first_occurrences(digests) if opts.dedup else np.ones(len(digests), bool)
    val = np.zeros(len(digests), bool)
    val[keep] = corpus.choose_val(digests[keep], opts.val_fraction, opts.seed)
    return keep, val


# ---- step 1: tokenizer ---------------------------------------------------------------------

def tokenizer_step(opts: PreprocessOptions, files: Sequence[CorpusFile], skipped: dict,
                   stage: Path) -> None:
    """Write DIR.partial/tokenizer.json and plan.json (a fresh staging folder)."""
    output.new_stage(Path(opts.out), opts.replaces())  # an unfinished earlier one is removed
    with output.removed_on_error(stage):
        if opts.tokenizer == "byte":
            data = hf_to_json_bytes(build_byte_tokenizer())
        elif opts.tokenizer == "file":
            load_tokenizer(opts.tokenizer_file)  # a clear error now, not in every task
            data = Path(opts.tokenizer_file).read_bytes()
        else:
            # A list, not a generator: HF trains faster when it need not call back into
            # Python; the sample is bounded by --tokenizer-sample-bytes.
            texts = list(training_texts(opts, files))
            data = hf_to_json_bytes(train_bpe(texts, opts.vocab_size, length=len(texts)))
        # No temporary name needed: the tasks refuse to start until plan.json, written
        # last, exists.
        (stage / "tokenizer.json").write_bytes(data)
        for name, extra in Tokenizer(data).transformers_files().items():  # AutoTokenizer(DATA)
            (stage / name).write_bytes(extra)
        plan = {"options": opts.plan(), "files": corpus.files_fingerprint(files),
                "n_files": len(files), "skipped": skipped, "started": time.time()}
        (stage / "plan.json").write_text(json.dumps(plan, indent=1))


def training_texts(opts: PreprocessOptions, files: Sequence[CorpusFile]) -> Iterator[str]:
    """The train documents (after cleaning, dedup, val hold-out), or a seeded sample."""
    files = pieces.split_files(files, opts.piece_bytes)
    with workers.Pool(opts.workers, None) as pool:
        scans = list(pool.map(workers.scan_job, batches(opts, files, "scan"), opts.redact_pii))
        digests = np.concatenate([digests for digests, _ in scans])
        n_bytes = np.concatenate([n_bytes for _, n_bytes in scans])
        keep, val = keep_and_val(opts, digests)
        train = keep & ~val
        if not train.any():  # --val-fraction 1: the vocabulary comes from the held-out text
            train = keep
        if n_bytes[train].sum() > opts.tokenizer_sample_bytes:
            idx = np.flatnonzero(train)
            order = np.argsort(corpus.seeded_score(digests[idx], opts.seed, salt=1), kind="stable")
            fits = np.cumsum(n_bytes[idx[order]]) <= opts.tokenizer_sample_bytes
            train[:] = False
            train[idx[order[fits]]] = True
        i = 0
        for texts in pool.map(workers.clean_job, batches(opts, files, None), opts.redact_pii):
            for text in texts:
                if train[i]:
                    yield text
                i += 1


def batches(opts: PreprocessOptions, files: Sequence[CorpusFile | pieces.Piece],
            desc: str | None, stats: ReadStats | None = None) -> Iterator[workers.Work]:
    """The documents of `files` in batches of about 512 kB, with a bytes/s bar on stderr (lines
    off a terminal: hvdlm/bars.py); a piece of a split file goes as it is, for the worker that
    gets it to read."""
    bar = bars.bar(sum(f.size for f in files), desc, "B", unit_scale=True, mininterval=0.5)
    read = corpus.ReadOptions(opts.text_field, opts.skip_bad_records, opts.max_document_bytes)
    try:
        for split, run in itertools.groupby(
                files, key=lambda f: isinstance(f, pieces.Piece) and f.count > 1):
            if not split:
                yield from workers.text_batches(
                    corpus.read_documents(list(run), read, stats, bar.update))
                continue
            for piece in run:
                yield workers.PieceWork(piece, read)
                bar.update(piece.size)
    finally:
        bar.close()


# ---- step 2: one task's part ---------------------------------------------------------------

def task_step(opts: PreprocessOptions, files: Sequence[CorpusFile], stage: Path,
              task: int) -> None:
    """Clean and encode this task's files into DIR.partial/parts/<task>-of-<K>/."""
    plan = read_plan(stage, opts, files)
    tok = load_tokenizer(stage / "tokenizer.json")
    part = stage / "parts" / f"{task:05d}-of-{opts.num_tasks:05d}"
    shutil.rmtree(part, ignore_errors=True)  # a re-run array task replaces its part
    start, stats = time.time(), ReadStats()
    mine = pieces.task_pieces(pieces.split_files(files, opts.piece_bytes), task, opts.num_tasks)
    with output.staged(part) as tmp:
        writer = workers.PartWriter(tmp, dtype_for_vocab(tok.vocab_size))
        desc = f"task {task}/{opts.num_tasks}" if opts.num_tasks > 1 else "encode"
        with workers.Pool(opts.workers, str(stage / "tokenizer.json")) as pool:
            # A worker reading a piece spills its ids to a file in `tmp`, not through a pipe.
            for enc in pool.map(workers.encode_job, batches(opts, mine, desc, stats),
                                opts.redact_pii, str(tmp)):
                writer.add(enc)
                if enc.read is not None:  # a piece its worker read
                    stats.add(enc.read)
        writer.close({"task": task, "num_tasks": opts.num_tasks, "files": plan["files"],
                      "tokenizer_sha256": tok.sha256, "read": vars(stats),
                      "input_bytes": sum(f.size for f in mine), "workers": opts.workers,
                      "seconds": time.time() - start})


# ---- step 3: merge -------------------------------------------------------------------------

def merge_step(opts: PreprocessOptions, files: Sequence[CorpusFile], stage: Path,
               started: float | None) -> dict:
    """Build DIR from the K parts: dedup, split, shards, manifest (last), report, rename."""
    with output.full_disk_is_one_line(stage):  # half-written shards: redone by the next merge
        return _merge(opts, files, stage, started)


def _merge(opts: PreprocessOptions, files: Sequence[CorpusFile], stage: Path,
           started: float | None) -> dict:
    plan = read_plan(stage, opts, files)
    out = Path(opts.out)
    output.refuse_existing(out, opts.replaces())  # before the work; publish checks again
    tok = load_tokenizer(stage / "tokenizer.json")
    parts = [workers.load_part(stage / "parts" / f"{i:05d}-of-{opts.num_tasks:05d}", tok.sha256,
                                plan["files"]) for i in range(opts.num_tasks)]
    keep, val = keep_and_val(opts, np.concatenate([p.digests for p in parts]))
    for p in (stage / "train", stage / "val"):
        shutil.rmtree(p, ignore_errors=True)  # a re-run merge starts its shards afresh
    writers = {s: ShardWriter(stage, s, opts.shard_tokens, tok.vocab_size, tok.eos_id, tok.sha256)
               for s in ("train", "val")}
    if opts.dedup:  # DATA/dedup_counts.npy: each kept document's copies, for hvdlm.audit
        dupcounts.write(stage, np.concatenate([p.digests for p in parts]), keep, val)
    if opts.canaries:  # whole canary documents between train documents (hvdlm/text/canaries.py)
        writers["train"] = Inserter(writers["train"], opts.canaries, tok,
                                    int((keep & ~val).sum()), dtype_for_vocab(tok.vocab_size))
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
    seconds = time.time() - (started or plan["started"])
    report = make_report(plan, parts, keep, val, tok, seconds)
    (stage / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    shutil.rmtree(stage / "parts")
    (stage / "plan.json").unlink()
    output.publish(stage, out, opts.replaces())
    return report


def make_report(plan: dict, parts: list[workers.Part], keep: np.ndarray, val: np.ndarray,
                tok: Tokenizer, seconds: float) -> dict:
    """preprocess_report.json: what was kept, dropped and repaired, summed over the parts."""
    def total(key: str) -> int:
        return sum(p.info[key] for p in parts)

    read = corpus.sum_read_stats(p.info["read"] for p in parts)
    n_tokens = np.concatenate([p.n_tokens for p in parts])
    n_bytes = np.concatenate([p.n_bytes for p in parts])
    train, held = keep & ~val, keep & val
    tokens, nbytes = int(n_tokens[keep].sum()), int(n_bytes[keep].sum())
    return {
        "documents": int(keep.sum()), "train_documents": int(train.sum()),
        "val_documents": int(held.sum()), "bytes": nbytes, "input_bytes": total("input_bytes"),
        "tokens": tokens, "train_tokens": int(n_tokens[train].sum()),
        "val_tokens": int(n_tokens[held].sum()),
        "bytes_per_token": round(nbytes / max(1, tokens - int(keep.sum())), 4),
        "files": plan["n_files"], "skipped_files": sum(plan["skipped"].values()),
        "skipped": plan["skipped"], "records": read["records"],
        "bad_records": read["bad_records"], "oversize_documents": read["oversize"],
        "empty_documents": total("empty"),
        "replaced_chars": read["replaced_chars"], "replaced_documents": read["replaced_docs"],
        "redacted": {k: sum(p.info["redacted"][k] for p in parts) for k in PII_KINDS},
        "formats": read["formats"],  # files and documents read, per format
        "duplicates": int(len(keep) - keep.sum()), "seconds": round(seconds, 3),
        "mb_per_s": round(total("input_bytes") / 1e6 / max(seconds, 1e-9), 3),
        "tokenizer": {"vocab_size": tok.vocab_size, "eos_id": tok.eos_id, "sha256": tok.sha256},
        "tasks": [{"task": p.info["task"], "workers": p.info["workers"],
                   "seconds": round(p.info["seconds"], 3)} for p in parts],
        "options": plan["options"],
    }
