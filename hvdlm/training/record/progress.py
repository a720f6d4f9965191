"""Training progress for people: a bar on a terminal, one line per log interval elsewhere.

`train.log_format=auto` picks the bar when stderr is a terminal and lines otherwise (a Slurm
`.out` file then holds readable lines, not carriage-return frames). RUN/log.txt always gets
the lines:

    step 100/5000 | epoch 0.42 | loss 3.2104 | lr 3.0e-04 | 21.3k tok/s | eta 1h02m | mfu 41.2%

An epoch is one pass over the train split; past EPOCH_WARNING of them the run warns once (the
model is likely memorising a corpus too small for its steps).
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from hvdlm import bars
from hvdlm.training.record.logs import log

EPOCH_WARNING = 10


def _si(x: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    return f"{minutes}m{int(seconds % 60):02d}s"


def format_line(record: dict[str, Any], max_steps: int, seconds_per_step: float) -> str:
    """The log line of one training-step record (step, loss, lr, tokens_per_s, mfu?)."""
    epoch = [f"epoch {record['epoch']:.2f}"] if "epoch" in record else []
    parts = [f"step {record['step']}/{max_steps}", *epoch, f"loss {record['loss']:.4f}",
             f"lr {record['lr']:.1e}", f"{_si(record['tokens_per_s'])} tok/s",
             f"eta {_duration((max_steps - record['step']) * seconds_per_step)}"]
    if "mfu" in record:
        parts.append(f"mfu {100 * record['mfu']:.1f}%")
    return " | ".join(parts)


class Progress:
    """Rank 0's view of the loop; a no-op on the other ranks."""

    def __init__(self, log_format: str, max_steps: int, step: int, enabled: bool) -> None:
        self.max_steps, self.enabled, self.warned = max_steps, enabled, False
        self.lines = log_format == "lines" or (log_format == "auto" and not bars.on_terminal())
        self.bar = tqdm(total=max_steps, initial=step, dynamic_ncols=True, mininterval=1.0,
                        file=sys.stderr) if enabled and not self.lines else None

    def step_done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def report(self, record: dict[str, Any], seconds_per_step: float) -> None:
        if not self.enabled:
            return
        if record.get("epoch", 0) > EPOCH_WARNING and not self.warned:
            self.warned = True
            log.warning("step %d: %.1f passes over the train split (more than %d epochs): the "
                        "model may be memorising it; a larger corpus or fewer steps would "
                        "generalise better", record["step"], record["epoch"], EPOCH_WARNING)
        # With a bar on the terminal the line goes to RUN/log.txt only.
        log.info(format_line(record, self.max_steps, seconds_per_step),
                 extra={"console": self.lines})
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.3f}",
                                 tok_s=f"{record['tokens_per_s']:,.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
