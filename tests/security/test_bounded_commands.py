"""Commands bound their own work, whatever their inputs: explain --file of a huge file, 50,000
--ban strings, --num-samples 100000 with --max-time 1, floats at the edge of the range, bytes
that are not UTF-8 in text options. Each ends within 10 s of CPU and 512 MiB, in a one-line
refusal or a normal, bounded end (tests/security/hostile.py).

    .venv/bin/python -m pytest tests/security/test_bounded_commands.py
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.hostile import (PEAK_BYTES, SECONDS, refused, run_measured,
                                    train_victim_run)

pytestmark = pytest.mark.security


@pytest.fixture(scope="module")
def run(byte_dataset, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("bounded")
    train_victim_run(byte_dataset, home / "run")
    return home / "run"


def _finishes(module: str, *args) -> str:
    """The command ends normally within SECONDS of CPU and PEAK_BYTES; its stderr."""
    proc, peak, seconds = run_measured(module, *args)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err[-2000:]
    assert seconds < SECONDS and peak < PEAK_BYTES, (seconds, peak >> 20)
    return err


def test_explain_reads_only_what_max_tokens_needs(run, tmp_path):
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as f:  # 2 GiB of text (a sparse file: NUL characters)
        f.write(b"def f(x):\n    return x\n")
        f.truncate(2 << 30)
    _finishes("hvdlm.explain", "--run", run, "--file", huge, "--max-tokens", "64",
              "--out", tmp_path / "report")
    assert (tmp_path / "report" / "explain.json").exists()


def test_ban_lists_are_capped_and_prepared_within_max_time(run):
    many = [f"--ban=b{i}" for i in range(50_000)]
    line = refused("hvdlm.generate", "--run", run, "--prompt", "x", *many)
    assert "--ban" in line, line
    _finishes("hvdlm.generate", "--run", run, "--prompt", "x", "--max-time", "2",
              "--max-new-tokens", "20", *many[:1_000])


def test_num_samples_stop_at_the_deadline(run):
    err = _finishes("hvdlm.generate", "--run", run, "--prompt", "x", "--num-samples",
                    "100000", "--max-time", "1", "--max-new-tokens", "5")
    assert "stopped after" in err and "of 100000 samples: --max-time reached" in err, err[-500:]


@pytest.mark.parametrize("option,value", [("--temperature", "1e-300"),
                                          ("--repetition-penalty", "1e-300"),
                                          ("--top-p", "1e-320"), ("--temperature", "1e300"),
                                          ("--max-time", "1e300")])
def test_floats_out_of_range_are_one_line(run, option, value):
    line = refused("hvdlm.generate", "--run", run, "--prompt", "x", option, value)
    assert option in line, line


def test_text_options_that_are_not_utf8_are_one_line(run, tmp_path):
    line = refused("hvdlm.generate", "--run", run, "--prompt", b"caf\xe9 \xff")
    assert "--prompt" in line and "UTF-8" in line, line
    line = refused("hvdlm.explain", "--run", run, "--text", b"\xc3\x28 bad",
                   "--out", tmp_path / "x")
    assert "--text" in line and "UTF-8" in line, line
