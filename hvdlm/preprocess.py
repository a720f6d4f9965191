"""Raw text to training data: corpus -> tokenizer.json -> HDF5 shards + manifest.json.

One machine (N worker processes encode batches; the parent writes):

    python -m hvdlm.preprocess corpus/ more.jsonl.gz --out data/ --workers 4 [--redact-pii]

K Slurm array tasks (see slurm/preprocess.sbatch), the same arguments in every step:

    python -m hvdlm.preprocess IN... --out data/ --num-tasks K --tokenizer-only   # once
    python -m hvdlm.preprocess IN... --out data/ --num-tasks K --task-index I     # I = 0..K-1
    python -m hvdlm.preprocess IN... --out data/ --num-tasks K --merge            # once

A single run is the same three steps with K = 1 (hvdlm/text/pipeline.py), so the dataset is
identical for any --workers N and any K.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from hvdlm import cli, folders, output
from hvdlm.errors import UsageError
from hvdlm.text import canaries, corpus, formats, pipeline
from hvdlm.text.pipeline import PreprocessOptions

PROG = "hvdlm.preprocess"
SUMMARY = """\
wrote {out}
  documents      {documents} (train {train_documents}, val {val_documents})
  bytes          {bytes} of text ({input_bytes} read from {files} files)
  tokens         {tokens} (train {train_tokens}, val {val_tokens}), {bytes_per_token} bytes/token
  skipped        {skipped_files} files ({skipped}), {oversize_documents} documents over \
--max-document-bytes, {bad_records} bad records, {empty_documents} empty documents
  replaced       {replaced_chars} invalid UTF-8 sequences in {replaced_documents} documents
  redacted       {redacted}
  duplicates     {duplicates}
  formats        {formats}
  seconds        {seconds} ({mb_per_s} MB/s)"""


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
    p.add_argument("--max-document-bytes", type=int, metavar="N",
                   default=corpus.ReadOptions.max_document_bytes,
                   help="skip (and count) documents larger than N bytes (default 16 MiB)")
    p.add_argument("--code-extensions", type=formats.parse_code_extensions, metavar="EXTS",
                   default=formats.DEFAULT_CODE_EXTENSIONS,
                   help="source files read as one document each, e.g. .py,.c,.rs (default: "
                   f"{','.join(formats.DEFAULT_CODE_EXTENSIONS)})")
    p.add_argument("--piece-bytes", "--split-bytes", dest="piece_bytes", type=int, metavar="N",
                   default=pipeline.PreprocessOptions.piece_bytes,
                   help="read .jsonl/.parquet files over N bytes in pieces shared by workers "
                   "and array tasks (default 16 MiB; .gz/.zst streams are never split)")
    p.add_argument("--canaries", type=int, metavar="N",
                   help="plant N random secrets per --canary-repeats count in train, and draw "
                   "N controls; both listed in DIR/canaries.json for python -m hvdlm.audit")
    p.add_argument("--canary-repeats", type=canaries.parse_repeats, metavar="R,R,...",
                   help="copies of each secret (default 1,10,100)")
    p.add_argument("--canary-format", metavar="TEXT",
                   help="a canary's text; {dK} is K random digits (default 'my pin is {d6}')")
    p.add_argument("--canary-seed", type=int, metavar="S",
                   help="draws the secrets and their places (default: --seed)")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="also read through symlinks that lead out of an input folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing DIR (only a dataset hvdlm wrote)")
    return p


def options_from_args(a) -> PreprocessOptions:
    """The run's options from parsed arguments (the parser holds the defaults)."""
    if a.tokenizer_file and a.tokenizer:
        raise UsageError("--tokenizer-file and --tokenizer exclude each other")
    workers = a.workers  # the output is the same for any N, so use what we are given
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(PreprocessOptions)}
    given.update(inputs=tuple(a.inputs), workers=workers,
                 tokenizer="file" if a.tokenizer_file else (a.tokenizer or "bpe"),
                 tokenizer_file=os.path.abspath(a.tokenizer_file) if a.tokenizer_file else None)
    given.update(canaries=canary_spec(a))
    return PreprocessOptions(**given)


def canary_spec(a) -> canaries.CanarySpec | None:
    """--canaries N and its --canary-* options (which need it); None without."""
    extra = {"repeats": a.canary_repeats, "format": a.canary_format, "seed": a.canary_seed}
    if not a.canaries:
        given = [k for k, v in extra.items() if v is not None]
        if given:
            raise UsageError(f"--canary-{given[0]} needs --canaries N")
        return None
    extra["seed"] = a.seed if a.canary_seed is None else a.canary_seed
    return canaries.CanarySpec(a.canaries, **{k: v for k, v in extra.items() if v is not None})


def _main(argv: Sequence[str] | None) -> int:
    a = build_parser().parse_args(argv)
    folders.refuse(Path(a.out), "--out", folders.RUN, "hvdlm.preprocess writes a dataset "
                   "folder of its own, and --overwrite never replaces a run")
    opts = options_from_args(a)
    if a.task_index is not None and not 0 <= a.task_index < a.num_tasks:
        raise UsageError(f"--task-index must be in 0..{a.num_tasks - 1} (--num-tasks)")
    if a.task_index is not None and (a.tokenizer_only or a.merge):
        raise UsageError("--task-index excludes --tokenizer-only and --merge")
    single = a.task_index is None and not a.tokenizer_only and not a.merge
    if single and a.num_tasks > 1:
        raise UsageError("--num-tasks K needs --tokenizer-only, --task-index or --merge")
    started = time.time()
    files, skipped = corpus.collect_files(opts.inputs, opts.follow_symlinks,
                                          opts.code_extensions)
    out = Path(opts.out)
    stage = output.partial(out)
    if a.tokenizer_only:
        pipeline.tokenizer_step(opts, files, skipped, stage)
        print(f"{PROG}: tokenizer and plan written to {stage}; now run the tasks")
        return 0
    if a.task_index is not None:
        pipeline.task_step(opts, files, stage, a.task_index)
        print(f"{PROG}: task {a.task_index} of {opts.num_tasks} done")
        return 0
    if a.merge:
        report = pipeline.merge_step(opts, files, stage, None)
    else:
        pipeline.tokenizer_step(opts, files, skipped, stage)
        with output.removed_on_error(stage):
            pipeline.task_step(opts, files, stage, 0)
            report = pipeline.merge_step(opts, files, stage, started)
    def counts(d: dict) -> str:
        return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in d.items())
    per_format = ", ".join(f"{k} {v['files']} files / {v['documents']} documents"
                           for k, v in report["formats"].items())
    print(SUMMARY.format(**{**report, "redacted": counts(report["redacted"]),
                            "formats": per_format,
                            "skipped": counts(report["skipped"])}, out=out))
    return 0


main = cli.entry_point(_main, PROG)

if __name__ == "__main__":
    sys.exit(main())
