"""What a run writes besides checkpoints: RUN/metrics.jsonl, RUN/tb/, RUN/log.txt.

Only rank 0 writes. Every metrics record is one JSON object with a `step`. A run that starts
at step S (resumed from a checkpoint, or 0) keeps the records up to S and writes the later steps
again: metrics.jsonl drops the others, TensorBoard purges them (`purge_step`), so each step is
there once. The files are opened without following links and only if they are this user's
regular files (output.open_append), created private.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from hvdlm import untrusted
from hvdlm.output import open_append, write_atomic

log = logging.getLogger("hvdlm")
MAX_METRICS_BYTES = 4 << 30  # ~200 bytes a record: twenty million records


def setup_logging(rank: int) -> None:
    """Log lines to stderr: every message on rank 0, warnings and errors from the others."""
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s "
                                           "%(message)s", "%H:%M:%S"))
    console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console.addFilter(lambda record: getattr(record, "console", True))  # False: log.txt only
    log.addHandler(console)


def log_to_file(path: Path) -> None:
    """Also log to RUN/log.txt (rank 0 only, after setup_logging), in the same format."""
    file = logging.StreamHandler(open_append(path))  # FileHandler would follow a link
    file.setFormatter(log.handlers[0].formatter)
    log.addHandler(file)


class MetricsWriter:
    """Appends records to metrics.jsonl and mirrors numbers to TensorBoard, from `start_step`
    on (the step the run starts at: records after it are dropped first)."""

    def __init__(self, run: Path, start_step: int = 0, config: dict | None = None,
                 mirrors: Sequence[Any] = ()):
        self.mirrors = list(mirrors)  # e.g. W&B: write(step, scalars), close()
        self.path = run / "metrics.jsonl"
        drop_records_after(self.path, start_step)
        self.file = open_append(self.path)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run / "tb"), purge_step=start_step + 1)
        except ImportError:  # tensorboard is a dependency; keep training if it is broken
            log.warning("tensorboard unavailable; metrics go to metrics.jsonl only")
            self.tb = None
        if self.tb is not None and config is not None and start_step == 0:
            self.tb.add_text("config", f"```\n{json.dumps(config, indent=1)}\n```", 0)
            self.tb.add_hparams(flat_config(config), {}, run_name=".")

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        self.file.write(json.dumps(record) + "\n")
        scalars = {tag(k): v for k, v in record.items() if k not in ("step", "time")
                   and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key, value in scalars.items() if self.tb is not None else ():
            self.tb.add_scalar(key, value, record["step"])
        for mirror in self.mirrors:
            mirror.write(record["step"], scalars)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        for mirror in self.mirrors:
            mirror.close()


def tag(key: str) -> str:
    """TensorBoard and W&B name of a record key: val_loss -> val/loss, loss -> train/loss."""
    return "val/" + key[4:] if key.startswith("val_") else "train/" + key


def flat_config(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"model.n_layer": 4, ...}: the config as TensorBoard hyperparameters."""
    return {f"{section}.{key}": value for section, table in config.items()
            for key, value in table.items()}


def drop_records_after(path: Path, step: int) -> None:
    """Keep metrics.jsonl's lines up to `step` (and no partial line), replacing it atomically."""
    if not path.exists() and not path.is_symlink():
        return
    lines = untrusted.read_text(path, MAX_METRICS_BYTES, "metrics file", follow=False) \
        .splitlines()
    kept = [line for line in lines if (at := _step(line)) is not None and at <= step]
    if kept == lines:
        return
    write_atomic(path, "".join(line + "\n" for line in kept).encode(), private=True)


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a partial line, or not a record


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """RUN/metrics.jsonl as records; safe while training writes it (a partial last line and a
    file not yet created are skipped)."""
    path = Path(run) / "metrics.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # the line being written
    return records
