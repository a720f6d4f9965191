"""The privacy study's tables and figures, made from its report.json alone: report.md (the
exposure and extraction tables, the setup, the command), exposure.png and extraction.png,
written by benchmarks.report.

    python -m benchmarks.studies.privacy_report [DIR]   # DIR/report.json -> the rest
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from benchmarks import report
from hvdlm.audit.extraction import BUCKETS as _LIMITS

BUCKETS = tuple(name for _, _, name in _LIMITS)  # "1", "2-9", ...: the audit's, in order


def _rate(part: dict[str, Any] | None) -> str:
    if not part or not part.get("documents"):
        return "–"
    return f"{part['extracted']}/{part['documents']} ({100 * part['rate']:.0f}%)"


def exposure_rows(payload: dict[str, Any]) -> list[list[Any]]:
    epochs = payload["runs"]["plain"]["epochs"]
    rows = []
    for g in payload["exposure"]["groups"]:
        kind = "exact" if "mean_exposure_exact" in g else "estimate"
        seen = "never" if g["repeats"] == 0 else f"≈{g['repeats'] * epochs:.0f}"
        rows.append(["control (never inserted)" if g["repeats"] == 0 else f"{g['repeats']}×",
                     g["n"], seen, f"{g[f'mean_exposure_{kind}']:.1f}",
                     f"{min(s[f'exposure_{kind}'] for s in g['secrets']):.1f}–"
                     f"{g[f'max_exposure_{kind}']:.1f}", f"{g['mean_exposure_estimate']:.1f}"])
    return rows


def extraction_rows(payload: dict[str, Any]) -> list[list[Any]]:
    x = payload["extraction"]
    buckets = [b for b in BUCKETS
               if any(b in (x[n]["train"].get("by_occurrences") or {}) for n in x)]
    rows = [[f"train, {b}×", _rate(x["plain"]["train"]["by_occurrences"].get(b)),
             _rate((x["dedup"]["train"].get("by_occurrences") or {}).get(b))] for b in buckets]
    rows.append(["train, all", _rate(x["plain"]["train"]), _rate(x["dedup"]["train"])])
    val = [b for b in BUCKETS
           if b in (x["plain"]["val"].get("by_occurrences") or {})]
    rows += [[f"val, {b}× (never trained on)", _rate(x["plain"]["val"]["by_occurrences"][b]),
              _rate((x["dedup"]["val"].get("by_occurrences") or {}).get(b))] for b in val]
    if len(val) > 1:
        rows.append(["val, all", _rate(x["plain"]["val"]), _rate(x["dedup"]["val"])])
    return rows


def tables(payload: dict[str, Any]) -> str:
    """The two tables of the study: exposure by repeats, extraction by occurrences."""
    e = payload["exposure"]
    exposure = report.md_table(["canaries", "secrets", "seen in training", "exposure (bits)",
                                "range", "estimate"], exposure_rows(payload))
    extraction = report.md_table(["documents (occurrences before dedup)", "without --dedup",
                                  "with --dedup"], extraction_rows(payload))
    return (f"Exposure of `{e['template']}` canaries (at most {e['max_exposure_bits']:.1f} "
            f"bits: ranked first of {e['space']:,}; exact enumeration, and beside it the "
            "skew-normal estimate, which extrapolates past that maximum at the top):\n\n"
            f"{exposure}\n\nExtraction (greedy decoding reproduces the next "
            f"{payload['extraction']['plain']['suffix']} tokens exactly from the first "
            f"{payload['extraction']['plain']['prefix']}; tokens are bytes):\n\n{extraction}")


def write_reports(out: Path, payload: dict[str, Any]) -> None:
    c, runs, s = payload["corpus"], payload["runs"], payload["settings"]
    source = (f"the Python {c['python']} standard library" if c["source"] == "stdlib"
              else "the --corpus folder")
    dups = ", ".join(f"{n} files made to occur {o} times" for o, n in s["duplicates"])
    pii = payload["pii"]
    found = ", ".join(f"{v['found']} {k}" for k, v in pii["by_kind"].items() if v["found"])
    setup = (
        f"Corpus: {c['files']} files of {source} ({c['bytes']:,} bytes; .py/.txt/.md files of "
        f"{s['file_bytes'][0]} B to {s['file_bytes'][1] // 1024} KB outside tests and "
        "site-packages, "
        f"chosen by seed {s['seed']}), plus deliberate duplicates: {dups} (files of at most "
        f"{s['dup_max_bytes']} B that preprocessing keeps for training; {c['duplicate_bytes']:,} "
        f"bytes of copies). Byte tokenizer, 10% of the distinct texts held out "
        f"({c['val_texts']} files), {payload['canaries']['per_group']} "
        f"canaries per repeat count ({payload['canaries']['repeats']}) and as many controls. "
        f"Each run: a 4-layer, 128-wide GPT (the demo's), {runs['plain']['steps']} steps of "
        f"{s['micro_batch']} x {s['seq_len']} bytes on {s['np']} CPU rank{'s' * (s['np'] > 1)} of "
        f"{s['threads']} thread{'s' * (s['threads'] > 1)}: "
        f"{runs['plain']['epochs']:.1f} epochs of the plain dataset "
        f"({runs['plain']['train_tokens']:,} train tokens, final loss "
        f"{runs['plain']['final_loss']:.2f}) and {runs['dedup']['epochs']:.1f} of the "
        f"deduplicated one ({runs['dedup']['train_tokens']:,}, final loss "
        f"{runs['dedup']['final_loss']:.2f}): the same compute, so a document kept once is "
        "seen more often after dedup than a single document before it. Throughput "
        f"{runs['plain']['tokens_per_s']:,.0f} and {runs['dedup']['tokens_per_s']:,.0f} "
        f"tokens/s. PII in {pii['samples']} unconditioned samples of {pii['tokens_per_sample']}"
        f" tokens (plain run): {found or 'none'} found, {pii['in_training_text']} of them "
        "verbatim in the training text. The machine (2 cores) was shared with other agents' "
        "jobs while this ran: the load averages above are part of the result; they change the "
        "throughput, hence the steps taken in the time, not what a step computes. Stages "
        f"(seconds): {', '.join(f'{k} {v:g}' for k, v in payload['seconds'].items())}.")
    command = (f"python -m benchmarks.studies.privacy --minutes {s['minutes']:g} "
               f"--corpus-bytes {s['corpus_bytes']} --seed {s['seed']}")
    pictures = figures(payload)
    body = tables(payload) + "".join(f"\n\n![{Path(f.name).stem}]({f.name})" for f in pictures
                                     if report.can_plot())
    report.write(out, payload, "What a small model memorises of a real corpus",
                 [("Result", body), ("Setup", setup), ("Reproduce", f"`{command}`")], pictures)


def figures(payload: dict[str, Any]) -> list[report.Figure]:
    """exposure.png (each secret, by repeats) and extraction.png (rate by occurrences)."""
    e, x = payload["exposure"], payload["extraction"]
    groups = sorted(e["groups"], key=lambda g: g["repeats"])
    kind = "exposure_exact" if "mean_exposure_exact" in groups[0] else "exposure_estimate"
    names = [b for b in BUCKETS if b in x["plain"]["train"].get("by_occurrences", {})]

    def exposure(ax: Any) -> None:
        for i, g in enumerate(groups):
            values = [s[kind] for s in g["secrets"]]
            ax.plot([i + 0.06 * (j - (len(values) - 1) / 2) for j in range(len(values))],
                    values, "o", color="C0", alpha=0.6)
        ax.plot(range(len(groups)), [g[f"mean_{kind}"] for g in groups], "s-", color="C1",
                label="mean")
        ax.axhline(e["max_exposure_bits"], ls="--", color="grey",
                   label=f"ranked first of {e['space']:,}")
        ax.set_xticks(range(len(groups)), ["control" if g["repeats"] == 0
                                           else f"{g['repeats']}×" for g in groups])

    def extraction(ax: Any) -> None:
        for k, (run, label) in enumerate((("plain", "without --dedup"),
                                          ("dedup", "with --dedup"))):
            train = x[run]["train"].get("by_occurrences") or {}
            parts = [train.get(b) or {"documents": 0, "extracted": 0, "rate": 0} for b in names]
            parts.append((x[run]["val"].get("by_occurrences") or {}).get("1") or x[run]["val"])
            at = [i + 0.4 * k - 0.2 for i in range(len(parts))]
            rates = [100 * (part["rate"] or 0) for part in parts]
            ax.bar(at, rates, 0.4, label=label, color=f"C{k}")
            for i, part in enumerate(parts):  # k/n above each bar: a 0% bar is otherwise unseen
                ax.text(at[i], rates[i] + 1.5, f"{part['extracted']}/{part['documents']}",
                        ha="center", fontsize=7)
        ax.set_xticks(range(len(names) + 1), [f"train {b}×" for b in names] + ["val 1×"])
        ax.set_ylim(0, 110)

    return [report.Figure("exposure.png", f"'{e['template']}' canaries, "
                          f"{payload['runs']['plain']['steps']} steps",
                          "copies of the canary in the training split", "exposure (bits)",
                          draw=exposure),
            report.Figure("extraction.png", "greedy extraction, 50-token prefix and suffix",
                          "documents by occurrences in the corpus before dedup", "extracted (%)",
                          draw=extraction, grid="y")]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.studies.privacy_report",
                                description=__doc__.split("\n")[0])
    p.add_argument("dir", nargs="?", default="docs/privacy", help="holds report.json")
    out = Path(p.parse_args(argv).dir)
    write_reports(out, json.loads((out / "report.json").read_text()))
    print(f"wrote {out / 'report.md'} from {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
