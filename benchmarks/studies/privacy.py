"""What does a small model memorise of a real corpus? Canary exposure and extraction, with and
without --dedup, end to end through hvdlm's own commands.

    python -m benchmarks.studies.privacy [--corpus PATH] [--minutes 3.5] [--out docs/privacy]

The corpus (default: the running Python's standard library; --corpus: any folder) is cut to a
seeded subset of its .py, .txt and .md files of 400 B to 8 KB, about --corpus-bytes in all,
copied into WORK/corpus. Real code has few exact duplicates, so some are made on purpose
(`DUPLICATES`), like the canaries' repeats: 4 of the subset's files of at most 1 KB are copied
so that each occurs 100 times, and 8 more so that each occurs 10 times. They are chosen among
the files preprocessing keeps for training (a first pass over the subset says which: its val
choice depends only on the distinct texts and the seed, so the copies do not change it).
Then, each step a subprocess:

1. `hvdlm.preprocess` twice, as it is and with --dedup (byte tokenizer, 10% of the distinct
   texts held out, --canaries 4 --canary-repeats 1,10,100 in the default format);
2. `hvdlm.train` on each, one rank (`--np` for more, through horovodrun), the demo's GPT
   (4 layers, 128 wide, 128-byte context); both runs take the same number of steps, chosen by
   a 30-step calibration run so that each trains for about --minutes;
3. `hvdlm.audit`: exposure, extraction (every eligible document: p = k = 50 tokens) and PII in
   samples on the plain run, extraction on the deduplicated one.

Writes OUT/report.md (the tables), OUT/report.json (every number, with the audits and the
machine) and OUT/exposure.png, OUT/extraction.png (need matplotlib: hvdlm[bench]); see
benchmarks/studies/privacy_report.py, which makes them from the JSON alone. The default took
9.5 minutes on 2 cores shared with other jobs (one thread per process: see
benchmarks/studies/families.py on why); WORK keeps the corpus, datasets, runs, audits and each
step's log.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks import ROOT, report
from benchmarks.harness import module_cmd
from benchmarks.studies.privacy_report import write_reports
from hvdlm.text import shards
from hvdlm.training import data

EXTENSIONS = (".py", ".txt", ".md")
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
FILE_BYTES = (400, 8192)       # files outside this range are left out of the subset
DUPLICATES = ((100, 4), (10, 8))  # (occurrences, files): 4 files made to occur 100 times, ...
DUP_MAX_BYTES = 1024           # only small files are duplicated, so copies stay a small share
CANARIES = ["--canaries", "4", "--canary-repeats", "1,10,100"]  # format: "my pin is {d6}"
PREPROCESS = ["--tokenizer", "byte", "--val-fraction", "0.1", "--workers", "1"]
MICRO_BATCH, SEQ_LEN = 16, 128
MODEL = ["model.arch=gpt", "model.n_layer=4", "model.n_head=4", "model.n_embd=128",
         f"model.seq_len={SEQ_LEN}", f"train.micro_batch={MICRO_BATCH}", "train.lr=2e-3",
         "train.min_lr=2e-4", "train.warmup_steps=40", "train.eval_interval=1000000",
         "train.eval_batches=1", "train.log_format=lines", "train.device=cpu"]
CALIBRATION_STEPS = 30
AUDIT = ["--device", "cpu", "--documents", "100000", "--prefix", "50", "--suffix", "50"]
SAMPLES = 32


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def pool(root: Path) -> list[Path]:
    """The corpus files that may be chosen: text and code of FILE_BYTES, outside SKIP_DIRS."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)  # not walked into at all
        for name in sorted(names):
            path = Path(folder, name)
            if path.suffix in EXTENSIONS and path.is_file() \
                    and FILE_BYTES[0] <= path.stat().st_size <= FILE_BYTES[1]:
                found.append(path)
    return found


def choose(root: Path, target_bytes: int, seed: int) -> tuple[list[Path], list[Path]]:
    """A seeded subset of the pool, about target_bytes, that holds twice as many small files
    (candidates for duplication) as DUPLICATES needs: some will be held out for val."""
    files = pool(root)
    random.Random(seed).shuffle(files)
    wanted = 2 * sum(n for _, n in DUPLICATES)
    small = [p for p in files if p.stat().st_size <= DUP_MAX_BYTES][:wanted]
    if len(small) < wanted:
        raise SystemExit(f"benchmarks.studies.privacy: {root} has {len(small)} files of "
                         f"{FILE_BYTES[0]} to {DUP_MAX_BYTES} bytes; {wanted} are needed")
    chosen, total = list(small), sum(p.stat().st_size for p in small)
    for path in files:
        if total >= target_bytes:
            break
        if path not in small:
            chosen.append(path)
            total += path.stat().st_size
    return chosen, small


def held_out(corpus: Path, probe: Path, seed: int, threads: int) -> set[str]:
    """The texts `hvdlm.preprocess` holds out for val from `corpus`. Its choice depends on the
    set of distinct texts and the seed only, so copies added later do not change it."""
    run_logged(module_cmd("hvdlm.preprocess", corpus, "--out", probe, "--overwrite", "--seed",
                          seed, *PREPROCESS), probe.with_suffix(".log"), threads)
    manifest = data.open_dataset(probe)
    tok = manifest.open_tokenizer()
    texts = set()
    for info in manifest.splits.get("val", []):
        path = manifest.shard_path(info)
        tokens, offsets = shards.open_tokens(path), shards.read_doc_offsets(path)
        texts |= {tok.decode(tokens[a:b - 1].tolist()) for a, b in zip(offsets, offsets[1:])}
    return texts


def build_corpus(root: Path, work: Path, target_bytes: int, seed: int,
                 threads: int) -> dict[str, Any]:
    """WORK/corpus: a seeded subset of `root`, then copies of some of its small files that
    preprocessing keeps for training (a first pass over the subset tells which)."""
    chosen, small = choose(root, target_bytes, seed)
    out = work / "corpus"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    names = {}
    for i, path in enumerate(chosen):  # index first: flattened paths never collide
        names[path] = f"{i:04d}_{'_'.join(path.relative_to(root).parts)}"
        shutil.copyfile(path, out / names[path])
    val = held_out(out, work / "data-probe", seed, threads)
    text = {p: p.read_bytes().decode("utf-8", errors="replace") for p in chosen}
    if val - set(text.values()):
        raise SystemExit(f"benchmarks.studies.privacy: {len(val - set(text.values()))} val "
                         "texts match no file: cannot tell which files are trained on")
    small = [p for p in small if text[p] not in val]
    duplicated, extra = [], 0
    for occurrences, n in DUPLICATES:
        for path in small[:n]:
            stem, suffix = os.path.splitext(names[path])
            for copy in range(1, occurrences):
                shutil.copyfile(path, out / f"{stem}.copy{copy:02d}{suffix}")
            extra += (occurrences - 1) * path.stat().st_size
            duplicated.append({"file": str(path.relative_to(root)), "occurrences": occurrences,
                               "bytes": path.stat().st_size})
        small = small[n:]
    return {"files": len(chosen), "bytes": sum(p.stat().st_size for p in chosen),
            "val_texts": len(val), "duplicated": duplicated, "duplicate_bytes": extra,
            "documents": len(chosen) + sum((o - 1) * n for o, n in DUPLICATES)}


def run_logged(cmd: Sequence[str], log: Path, threads: int, timeout: float = 3600) -> float:
    """Run cmd with its output in `log`; seconds taken. A failure ends the study, log shown."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with open(log, "w") as f:
        status = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd=ROOT, timeout=timeout).returncode
    if status != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"benchmarks.studies.privacy: {' '.join(map(str, cmd[:4]))} ... exited "
                         f"{status}; {log}:\n{tail}")
    return time.perf_counter() - started


def train_cmd(data_dir: Path, run: Path, steps: int, np_: int) -> list[str]:
    args = ["--data", data_dir, "--out", run, "--resume", "never", *MODEL,
            f"train.max_steps={steps}", f"train.ckpt_interval={steps}",
            f"train.log_interval={min(20, max(1, steps // 3))}"]
    cmd = module_cmd("hvdlm.train", *args)
    if np_ > 1:
        horovodrun = str(Path(sys.executable).with_name("horovodrun"))
        cmd = [horovodrun, "-np", str(np_), "-H", f"localhost:{np_}", "--gloo", *cmd]
    return cmd


def throughput(run: Path) -> float:
    """Median tokens/s (all ranks) of a run's logged intervals, the first (warm-up) left out."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    return statistics.median(speeds[1:] or speeds)


def final_loss(run: Path) -> float | None:
    """The training loss of the last logged interval."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next((r["loss"] for r in reversed(records) if "loss" in r), None)


def train_tokens(data_dir: Path) -> int:
    return sum(s.n_tokens for s in data.open_dataset(data_dir).splits["train"])


def study(args: argparse.Namespace) -> dict[str, Any]:
    work, started, seconds = Path(args.work), time.perf_counter(), {}
    work.mkdir(parents=True, exist_ok=True)
    root = Path(args.corpus) if args.corpus else stdlib_root()

    def stage(text: str) -> None:
        print(f"[privacy {time.perf_counter() - started:5.0f}s] {text}", flush=True)

    stage(f"corpus: a subset of {root} -> {work / 'corpus'}")
    corpus = build_corpus(root, work, args.corpus_bytes, args.seed, args.threads)
    datasets = {"plain": work / "data-plain", "dedup": work / "data-dedup"}
    for name, flags in (("plain", []), ("dedup", ["--dedup"])):
        stage(f"preprocessing ({name}) -> {datasets[name]}")
        seconds[f"preprocess_{name}"] = run_logged(module_cmd(
            "hvdlm.preprocess", work / "corpus", "--out", datasets[name], "--overwrite",
            "--seed", args.seed, *PREPROCESS, *CANARIES, *flags),
            work / f"preprocess-{name}.log", args.threads)
    stage(f"calibrating: {CALIBRATION_STEPS} steps")
    shutil.rmtree(work / "run-calibrate", ignore_errors=True)
    seconds["calibrate"] = run_logged(
        train_cmd(datasets["plain"], work / "run-calibrate", CALIBRATION_STEPS, args.np),
        work / "train-calibrate.log", args.threads)
    calibrated = throughput(work / "run-calibrate")
    step_tokens = MICRO_BATCH * SEQ_LEN * args.np
    steps = max(10, round(args.minutes * 60 * calibrated / step_tokens))
    runs, audits = {}, {}
    for name in ("plain", "dedup"):
        run = work / f"run-{name}"
        shutil.rmtree(run, ignore_errors=True)
        stage(f"training ({name}): {steps} steps, about {args.minutes:g} min -> {run}")
        seconds[f"train_{name}"] = run_logged(train_cmd(datasets[name], run, steps, args.np),
                                              work / f"train-{name}.log", args.threads)
        tokens = train_tokens(datasets[name])
        runs[name] = {"steps": steps, "tokens_per_s": throughput(run),
                      "train_tokens": tokens, "epochs": steps * step_tokens / tokens,
                      "final_loss": final_loss(run)}
        out = work / f"audit-{name}"
        shutil.rmtree(out, ignore_errors=True)
        sections = "exposure,extraction,pii" if name == "plain" else "extraction"
        stage(f"auditing ({name}: {sections}) -> {out}")
        seconds[f"audit_{name}"] = run_logged(module_cmd(
            "hvdlm.audit", "--run", run, "--data", datasets[name], "--out", out, *AUDIT,
            "--sections", sections, "--samples", SAMPLES, "--seed", args.seed),
            work / f"audit-{name}.log", args.threads)
        audits[name] = json.loads((out / "audit.json").read_text())
    seconds["total"] = time.perf_counter() - started
    canaries = json.loads((datasets["plain"] / "canaries.json").read_text())
    pii = audits["plain"]["pii"]
    return {"corpus": {"source": "stdlib" if not args.corpus else "folder",
                       "python": sys.version.split()[0], **corpus},
            "canaries": {"template": canaries["template"], "space": canaries["space"],
                         "per_group": int(CANARIES[1]), "repeats": CANARIES[3]},
            "settings": {"minutes": args.minutes, "corpus_bytes": args.corpus_bytes,
                         "seed": args.seed, "np": args.np, "threads": args.threads,
                         "model": MODEL, "preprocess": PREPROCESS, "audit": AUDIT,
                         "samples": SAMPLES, "file_bytes": FILE_BYTES, "duplicates": DUPLICATES,
                         "dup_max_bytes": DUP_MAX_BYTES, "micro_batch": MICRO_BATCH,
                         "seq_len": SEQ_LEN},
            "calibration": {"steps": CALIBRATION_STEPS, "tokens_per_s": calibrated},
            "runs": runs,
            "exposure": audits["plain"]["exposure"],
            "extraction": {name: audits[name]["extraction"] for name in audits},
            "pii": {k: v for k, v in pii.items() if k != "strings"},  # counts, not the strings
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "machine": report.machine_info()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.studies.privacy",
                                description=__doc__.split("\n")[0])
    p.add_argument("--corpus", metavar="PATH", help="a folder (default: the stdlib)")
    p.add_argument("--corpus-bytes", type=int, default=300_000,
                   help="size of the subset before duplicates (default 300000)")
    p.add_argument("--minutes", type=float, default=3.5, help="training minutes per run")
    p.add_argument("--np", type=int, default=1, help="ranks per run (>1: horovodrun)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/privacy", help="corpus, datasets, runs, audits")
    p.add_argument("--out", default="docs/privacy")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.np < 1 or args.threads < 1 or args.corpus_bytes < 1:
        p.error("--minutes, --np, --threads and --corpus-bytes must be positive")
    if args.corpus and not Path(args.corpus).is_dir():
        p.error(f"--corpus {args.corpus}: not a folder")
    payload = study(args)
    write_reports(Path(args.out), payload)
    print(f"wrote {Path(args.out) / 'report.md'}, report.json and the plots")
    return 0 if all(math.isfinite(r["final_loss"] or math.nan) for r in payload["runs"].values()) \
        else 1


if __name__ == "__main__":
    sys.exit(main())
