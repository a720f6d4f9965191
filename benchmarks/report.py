"""Shared report writing for the benchmarks: JSON, Markdown tables, PNG plots (matplotlib, Agg).

Each benchmark builds its rows and calls these helpers, so every report folder looks alike:

    DIR/report.json   machine-readable results (plus `machine`: host, cores, load, commit)
    DIR/report.md     tables and a paragraph of findings
    DIR/*.png         plots (need matplotlib: pip install 'hvdlm[bench]'; without it the
                      JSON and Markdown reports are still written, and one line says so)

    python -c "from benchmarks.report import machine_info; print(machine_info())"
"""
from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from benchmarks.harness import ROOT

PLOTS_NEED = "plots skipped: they need matplotlib (pip install 'hvdlm[bench]')"
START_LOAD = os.getloadavg()  # when the benchmark started (this module is imported first)


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def variation(values: Sequence[float]) -> float:
    """Coefficient of variation: population standard deviation over the mean."""
    return statistics.pstdev(values) / statistics.fmean(values)


def machine_info() -> dict[str, Any]:
    """Where and when a benchmark ran: host, cores, load averages, torch, and the git commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"host": socket.gethostname(), "cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(),
            "load_avg_start": [round(x, 2) for x in START_LOAD],
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "torch": torch.__version__, "python": platform.python_version(),
            "commit": commit or "unknown"}


def write_json(out: Path, payload: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(machine: dict[str, Any]) -> str:
    load = ", ".join(f"{x:g}" for x in machine.get("load_avg", []))
    start = ", ".join(f"{x:g}" for x in machine.get("load_avg_start", []))
    return (f"Machine: `{machine.get('host')}`, {machine.get('cores')} cores, "
            f"load average (1, 5, 15 min) at the start {start or '-'}, at the end {load}; "
            f"torch {machine.get('torch')}, commit {machine.get('commit')}.")


def write_md(out: Path, title: str, sections: Sequence[tuple[str, str]],
             machine: dict[str, Any] | None = None) -> Path:
    """`sections` = [(heading, body markdown)]; the machine line goes under the title."""
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", ""]
    if machine:
        parts += [machine_line(machine), ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path


_told: list[bool] = []  # the missing-matplotlib line is printed once per process


def line_plot(path: Path, series: dict[str, tuple[Sequence[float], Sequence[float]]], *,
              xlabel: str, ylabel: str, title: str, logx: bool = False,
              styles: dict[str, str] | None = None) -> Path | None:
    """One PNG with a line per series: {label: (xs, ys)}; `styles` maps label to a fmt string.

    None, and no file, without matplotlib (the optional extra hvdlm[bench]); the first such
    call in a process says so on stderr.
    """
    try:  # optional: only plotting needs it
        import matplotlib
    except ImportError:
        if not _told:
            print(PLOTS_NEED, file=sys.stderr, flush=True)
            _told.append(True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=90)
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), (styles or {}).get(label, "o-"), label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
