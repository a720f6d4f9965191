"""audit.json (everything measured) and audit.md (the tables a person reads), written into
DIR.partial and renamed, so DIR appears complete or not at all."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hvdlm import output

NOT_MEASURED = "Not measured (not in --sections)."


def write(out: Path, result: dict[str, Any]) -> None:
    with output.staged(out, private=True) as stage:
        (stage / "audit.json").write_text(json.dumps(result, indent=1) + "\n")
        (stage / "audit.md").write_text(markdown(result))


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.2f}" if isinstance(x, float) else str(x)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *("| " + " | ".join(_fmt(x) for x in row) + " |" for row in rows), ""]


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Memorisation audit: {r['run']} (step {r['step']}, {r['arch']})", "",
             f"Data: `{r['data']}`; device {r['device']}.", ""]
    e = r.get("exposure")
    lines += ["## Canary exposure", ""]
    if "note" in (e or {}):
        lines += [e["note"], ""]
    elif e:
        lines += [f"Format `{e['template']}`: {e['space']} candidates, at most "
                  f"{e['max_exposure_bits']:.2f} bits. Method: {e['method']}; the estimate "
                  f"fits a skew-normal to {e['estimate_samples']} random candidates. Controls "
                  "were never inserted (expected about 1.44 bits).", ""]
        lines += _table(["group", "secrets", "exact (mean / max)", "estimate (mean / max)"],
                        [[("control" if g["repeats"] == 0 else f"{g['repeats']}×"), g["n"],
                          _pair(g, "exposure_exact"), _pair(g, "exposure_estimate")]
                         for g in e["groups"]])
    else:
        lines += [NOT_MEASURED, ""]
    x = r.get("extraction")
    lines += ["## Extraction", ""]
    if x:
        lines += [f"Greedy continuation of {x['suffix']} tokens from a {x['prefix']}-token "
                  "prefix must match the document exactly. Occurrences before dedup: "
                  f"{x['train']['occurrences']}.", ""]
        rows = []
        for split in ("train", "val"):
            s = x[split]
            rows.append([split, "all", s["documents"], s["extracted"], s["rate"]])
            for name, b in (s.get("by_occurrences") or {}).items():
                rows.append([split, f"{name}×", b["documents"], b["extracted"], b["rate"]])
        lines += _table(["split", "occurrences", "documents", "extracted", "rate"], rows)
    else:
        lines += [NOT_MEASURED, ""]
    p = r.get("pii")
    lines += ["## PII in samples", ""]
    if p:
        cut = f", top-k {p['top_k']}" if p["top_k"] else ""
        lines += [f"{p['samples']} samples of {p['tokens_per_sample']} tokens from "
                  f"end-of-text (temperature {p['temperature']}{cut}), scanned with the "
                  "--redact-pii detector.", ""]
        lines += _table(["kind", "found", "distinct", "verbatim in training text"],
                        [[k, v["found"], v["distinct"], v["in_training_text"]]
                         for k, v in p["by_kind"].items()])
    else:
        lines += [NOT_MEASURED, ""]
    return "\n".join(lines)


def _pair(group: dict, key: str) -> str:
    if f"mean_{key}" not in group:
        return "–"
    return f"{group['mean_' + key]:.2f} / {group['max_' + key]:.2f}"
