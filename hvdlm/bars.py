"""Progress on stderr for people: a tqdm bar on a terminal, plain lines anywhere else.

    with bars.bar(total=n_bytes, desc="encoding", unit="B") as bar:
        bar.update(k)

Off a terminal (a Slurm .out file, `2> log`, a pipe) carriage-return frames make a log
unreadable, so `bar` gives `LineBar` there: one line every `interval` seconds and one at the
end, never a `\\r`. Training's progress (hvdlm/training/record/progress.py) uses the same rule.
"""
from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm


def on_terminal() -> bool:
    """Whether stderr is a terminal (then a bar; otherwise lines)."""
    return sys.stderr.isatty()


def _amount(x: float, unit: str) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f} {prefix}{unit}"
    return f"{x:.0f} {unit}"


class LineBar:
    """tqdm's update/close/context manager, as lines: `desc: 12.0 MB of 40.0 MB (30%), 4.0 MB/s`."""

    def __init__(self, total: float, desc: str, unit: str, interval: float) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n, self.start = 0.0, time.monotonic()
        self.last, self.closed = self.start, False

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        rate = self.n / max(self.last - self.start, 1e-9)
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        sys.stderr.write(f"{self.desc}: {_amount(self.n, self.unit)} of "
                         f"{_amount(self.total, self.unit)}{share}, "
                         f"{_amount(rate, self.unit)}/s\n")
        sys.stderr.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()

    def __enter__(self) -> "LineBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Off:
    """A disabled bar."""

    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Off":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def bar(total: float, desc: str | None, unit: str = "it", interval: float = 30.0,
        **tqdm_options: Any):
    """A bar for `total` units on stderr: tqdm on a terminal, LineBar elsewhere; nothing when
    `desc` is None."""
    if desc is None:
        return _Off()
    if not on_terminal():
        return LineBar(total, desc, unit, interval)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                **tqdm_options)
