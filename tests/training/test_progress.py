"""hvdlm.training.record.progress: the log line a Slurm .out and RUN/log.txt show."""
from __future__ import annotations

from hvdlm.training.record.progress import format_line


def test_log_line_fields_and_eta():
    record = {"step": 100, "loss": 3.21044, "lr": 3e-4, "tokens_per_s": 21_345.0}
    line = format_line(record, 5000, seconds_per_step=0.76)
    assert line == "step 100/5000 | loss 3.2104 | lr 3.0e-04 | 21.3k tok/s | eta 1h02m"
    gpu = format_line({**record, "step": 4990, "tokens_per_s": 2.5e6, "mfu": 0.4123}, 5000, 3.0)
    assert gpu == "step 4990/5000 | loss 3.2104 | lr 3.0e-04 | 2.5M tok/s | eta 0m30s | mfu 41.2%"
