"""What did the model memorise? Canary exposure, extractable training data, PII in samples.

    python -m hvdlm.audit --run RUN --data DATA --out DIR [--checkpoint PATH] [--device auto|cpu|cuda]
        [--samples S] [--documents M] [--prefix P] [--suffix K] [--sections exposure,...]

DATA is the dataset the run trained on (its tokenizer must be the checkpoint's); with
`--canaries` at preprocessing it holds DATA/canaries.json. DIR gets audit.json (every number,
and the PII strings found in samples: keep it as private as the corpus) and audit.md.
Sections (hvdlm/audit/): exposure of each canary group beside never-inserted controls
(Carlini et al. 2019); the share of M train documents whose next K tokens greedy decoding
reproduces from a P-token prefix, against M val documents (Carlini et al. 2022), by how often
each document occurred before dedup; PII in S unconditioned samples and how much of it is
verbatim training text. A dataset without canaries skips the exposure section with a note,
unless `--sections exposure` asks for it alone: then it is an error.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hvdlm import cli, output
from hvdlm.errors import DataError, UsageError
from hvdlm.audit import exposure, extraction, pii_scan, report, runmodel
from hvdlm.text import canaries, dupcounts
from hvdlm.training import data

PROG = "hvdlm.audit"
SECTIONS = ("exposure", "extraction", "pii")


def build_parser() -> cli.ArgumentParser:
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="run folder with checkpoints/")
    p.add_argument("--data", required=True, metavar="DATA", help="the dataset it trained on")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder to create")
    p.add_argument("--checkpoint", metavar="PATH", help="audit this checkpoint (default: newest)")
    cli.add_device_option(p, default="auto")
    p.add_argument("--sections", default=",".join(SECTIONS), metavar="LIST",
                   help="any of exposure,extraction,pii (default: all)")
    p.add_argument("--samples", type=int, default=100, metavar="S",
                   help="unconditioned samples scanned for PII (default 100)")
    p.add_argument("--sample-tokens", type=int, default=256, metavar="N",
                   help="tokens per sample (default 256)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="sampling temperature (default 1)")
    p.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample from the K likeliest tokens (default 0: all)")
    p.add_argument("--documents", type=int, default=100, metavar="M",
                   help="train and val documents tried for extraction (default 100 each)")
    p.add_argument("--prefix", type=int, default=50, metavar="P",
                   help="prompt tokens (default 50)")
    p.add_argument("--suffix", type=int, default=50, metavar="K",
                   help="tokens that must match (default 50)")
    p.add_argument("--estimate-samples", type=int, default=10_000, metavar="N",
                   help="random candidates for the exposure estimate (default 10000)")
    p.add_argument("--exact-max", type=int, default=1_000_000, metavar="N",
                   help="enumerate every candidate when the space has at most N (default 1e6)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B",
                   help="sequences per forward when decoding (default 64)")
    p.add_argument("--seed", type=int, default=0, help="chooses documents, samples, candidates")
    return p


def parse_sections(text: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in chosen if s not in SECTIONS]
    if bad or not chosen:
        raise UsageError(f"--sections: {bad[0] if bad else text!r} is not one of "
                         f"{', '.join(SECTIONS)}")
    return chosen


def occurrence_counts(data_dir: Path, split: str, docs: extraction.Documents,
                      skip: set[int]) -> tuple[np.ndarray | None, str]:
    """Per document of the split, how often it occurred before dedup, and where that is from."""
    recorded = dupcounts.read(data_dir)
    if recorded is not None:
        mine = np.array([i for i in range(len(docs)) if i not in skip], dtype=np.int64)
        if len(mine) != len(recorded[split]):
            raise DataError(f"{data_dir / dupcounts.FILE}: {len(recorded[split])} {split} "
                            f"documents, the shards hold {len(mine)}")
        counts = np.zeros(len(docs), dtype=np.int64)
        counts[mine] = recorded[split]
        return counts, f"recorded at --dedup ({dupcounts.FILE})"
    try:
        options = json.loads((data_dir / "preprocess_report.json").read_text())["options"]
    except (OSError, ValueError, KeyError):
        options = {}
    if options.get("dedup"):
        return None, "unknown (deduplicated without a record of the copies)"
    return extraction.copies_in_split(docs), "copies in the dataset (not deduplicated)"


def audit(a) -> dict[str, Any]:
    sections = parse_sections(a.sections)
    for name in ("samples", "sample_tokens", "documents", "prefix", "suffix",
                 "estimate_samples", "batch_size"):
        if getattr(a, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if not a.temperature > 0 or a.top_k < 0:
        raise UsageError("--temperature must be above 0 and --top-k at least 0")
    data_dir = Path(a.data)
    found = canaries.load(data_dir)
    if found is None and sections == ("exposure",):
        raise DataError(f"{data_dir}: no {canaries.FILE}; preprocess with --canaries N to "
                        "measure exposure")
    output.refuse_existing(Path(a.out))
    manifest = data.open_dataset(data_dir)
    tok = manifest.open_tokenizer()
    if found is not None and found["tokenizer_sha256"] != tok.sha256:
        raise DataError(f"{data_dir / canaries.FILE}: written for another tokenizer")
    lm = runmodel.load(a.run, a.checkpoint, tok, cli.pick_device(a.device))
    started = time.time()
    result: dict[str, Any] = {"run": str(a.run), "data": str(data_dir), "step": lm.step,
                              "arch": lm.arch, "device": str(lm.device),
                              "checkpoint": a.checkpoint, "seed": a.seed}
    skip = {d for c in (found or {}).get("canaries", []) for d in c["documents"]}
    train = extraction.Documents.of(manifest, "train")
    if "exposure" in sections:
        result["exposure"] = exposure.measure(lm, tok, found, a.estimate_samples, a.exact_max,
                                              a.seed) if found else \
            {"note": f"skipped: the dataset has no {canaries.FILE} (preprocess with --canaries)"}
    if "extraction" in sections:
        x: dict[str, Any] = {"prefix": a.prefix, "suffix": a.suffix}
        for split, docs, mine in (("train", train, skip),
                                  ("val", extraction.Documents.of(manifest, "val"), set())):
            counts, source = occurrence_counts(data_dir, split, docs, mine)
            x[split] = extraction.measure(lm, docs, mine, counts, a.documents, a.prefix,
                                          a.suffix, a.seed, a.batch_size, f"extract {split}")
            x[split]["occurrences"] = source
        result["extraction"] = x
    if "pii" in sections:
        result["pii"] = pii_scan.measure(lm, tok, train, a.samples, a.sample_tokens, a.seed,
                                         a.temperature, a.top_k)
    result["seconds"] = round(time.time() - started, 3)
    return result


def _main(argv: Sequence[str] | None) -> int:
    a = build_parser().parse_args(argv)
    result = audit(a)
    report.write(Path(a.out), result)
    print(f"{PROG}: wrote {a.out}/audit.json and audit.md")
    return 0


main = cli.entry_point(_main, PROG)

if __name__ == "__main__":
    sys.exit(main())
