"""The one report writer of the benchmarks: JSON, Markdown and plots (matplotlib, optional).

Each benchmark builds its own payload, Markdown sections and figures and hands them to
`write`, so every report folder looks alike:

    OUT/report.json   the payload: every number, with `machine` (host, cores, load, commit)
    OUT/report.md     the title, the machine line, then each section (heading, Markdown body)
    OUT/*.png         the figures (need matplotlib: pip install 'hvdlm[bench]'; without it the
                      JSON and the Markdown are still written, and one line on stderr says so)

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from benchmarks import ROOT
from hvdlm.output import write_atomic

PLOTS_NEED = "plots skipped: they need matplotlib (pip install 'hvdlm[bench]')"
START_LOAD = os.getloadavg()  # when the benchmark started (this module is imported first)
Series = tuple[Sequence[float], Sequence[float]]  # (xs, ys)


@dataclass
class Figure:
    """One PNG, OUT/NAME: a line per series ({label: (xs, ys)}, `styles` a matplotlib format
    per label, "o-" by default), and the benchmark's own `draw(axes)` for what lines do not
    show (scatter, bars, ticks, reference lines)."""
    name: str
    title: str
    xlabel: str
    ylabel: str
    lines: dict[str, Series] = field(default_factory=dict)
    styles: dict[str, str] = field(default_factory=dict)
    logx: bool = False
    draw: Callable[[Any], None] | None = None
    grid: str = "both"  # the axes with grid lines: "both", "x" or "y"


def write(out: Path, payload: dict[str, Any], title: str | None = None,
          sections: Sequence[tuple[str, str]] = (), figures: Sequence[Figure] = (), *,
          name: str = "report") -> None:
    """OUT/NAME.json (first, whole or not at all: the Markdown can be made again from it);
    with a title, OUT/NAME.md (the machine line from payload["machine"]); then the figures."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{name}.json", (json.dumps(payload, indent=2) + "\n").encode())
    if title is not None:
        parts = [f"# {title}", ""]
        if payload.get("machine"):
            parts += [machine_line(payload["machine"]), ""]
        for heading, body in sections:
            parts += [f"## {heading}", "", body.strip(), ""]
        (out / f"{name}.md").write_text("\n".join(parts))
    for figure in figures:
        plot(out, figure)


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


def machine_line(machine: dict[str, Any]) -> str:
    load = ", ".join(f"{x:g}" for x in machine.get("load_avg", []))
    start = ", ".join(f"{x:g}" for x in machine.get("load_avg_start", []))
    return (f"Machine: `{machine.get('host')}`, {machine.get('cores')} cores, "
            f"load average (1, 5, 15 min) at the start {start or '-'}, at the end {load}; "
            f"torch {machine.get('torch')}, commit {machine.get('commit')}.")


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


def can_plot() -> bool:
    """Whether matplotlib (the optional extra hvdlm[bench]) is there; the first time it is
    not, in a process, one line on stderr says how to get it."""
    try:
        import matplotlib  # noqa: F401  (optional: only plotting needs it)
    except ImportError:
        if not _told:
            print(PLOTS_NEED, file=sys.stderr, flush=True)
            _told.append(True)
        return False
    return True


_told: list[bool] = []  # the missing-matplotlib line is printed once per process


def plot(out: Path, figure: Figure) -> Path | None:
    """Draw `figure` into OUT/figure.name; None, and no file, without matplotlib."""
    if not can_plot():
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=90)
    for label, (xs, ys) in figure.lines.items():
        ax.plot(list(xs), list(ys), figure.styles.get(label, "o-"), label=label)
    if figure.draw:
        figure.draw(ax)
    if figure.logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(figure.xlabel)
    ax.set_ylabel(figure.ylabel)
    ax.set_title(figure.title, fontsize=10)
    ax.grid(True, axis=figure.grid, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / figure.name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
