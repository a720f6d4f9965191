"""A second Unix user against a victim's run folder and outputs: links planted where a run
writes, its lock taken, its private files read, someone else's OUT.partial, --out tricks. Each
attack ends in a one-line refusal (exit 1 or 2) within 10 s and 512 MiB, and the victim's files
are unchanged (tests/security/hostile.py).

    sudo .venv/bin/python -m pytest tests/security/test_untrusted_runs.py
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.security.hostile import newest_checkpoint, refused, snapshot, train_victim_run

pytestmark = pytest.mark.security

# Run as the attacker: open each path and try to read it (or, for a lock, flock it); prints
# one line per path: "denied" or what it managed.
PROBE = r"""
import fcntl, os, sys
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        print("denied", path, err.strerror); continue
    if os.path.isdir(path):
        print("READ", path); continue
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("LOCKED", path)
    except OSError:
        print("READ", os.read(fd, 1), path)
"""


@pytest.fixture(scope="module")
def victim_run(byte_dataset) -> Iterator[Path]:
    """The victim's run, trained under umask 022 in a folder everyone may enter (not under
    pytest's base folder, which pytest keeps private)."""
    home = Path(tempfile.mkdtemp(prefix="hvdlm-victim-", dir="/tmp"))
    home.chmod(0o755)
    train_victim_run(byte_dataset, home / "run")
    yield home / "run"
    shutil.rmtree(home, ignore_errors=True)


def _probe(attacker, paths) -> list[str]:
    proc = attacker.run([sys.executable, "-c", PROBE, *paths], timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_others_can_neither_take_the_lock_nor_read_private_files_under_umask_022(attacker,
                                                                                 victim_run):
    private = [victim_run / ".lock", newest_checkpoint(victim_run), victim_run / "env.json",
               victim_run / "tokenizer.json", victim_run / "checkpoints"]
    assert all(p.exists() for p in private)
    assert _probe(attacker, [victim_run.parent])[0].startswith("READ")  # RUN's folder is open
    lines = _probe(attacker, private)
    assert all(line.startswith("denied") for line in lines), lines
    # A RUN the user made readable (or an older run's 0755 folder): the files stay private,
    # and the lock file cannot be opened, so it cannot be held against the owner.
    victim_run.chmod(0o755)
    try:
        lines = _probe(attacker, [victim_run / ".lock", newest_checkpoint(victim_run),
                                  victim_run / "env.json", victim_run / "tokenizer.json"])
        assert all(line.startswith("denied") for line in lines), lines
    finally:
        victim_run.chmod(0o700)


def test_a_run_folder_others_may_write_is_refused_and_planted_links_are_never_followed(
        attacker, byte_dataset, open_dir):
    mine = open_dir / "victim-files"
    mine.mkdir()
    precious = [mine / "thesis.txt", mine / "notes.txt"]
    for i, path in enumerate(precious):
        path.write_text(f"the victim's own file {i}\n")
    run = open_dir / "project-run"
    run.mkdir()
    run.chmod(0o777)  # a group project folder (here: everyone, so the attacker may write)
    plant = ("import os, sys; run, a, b = sys.argv[1:]; os.symlink(a, run + '/log.txt'); "
             "os.symlink(b, run + '/metrics.jsonl')")
    proc = attacker.run([sys.executable, "-c", plant, run, *precious])
    assert proc.returncode == 0, proc.stderr
    before = snapshot(*precious)
    line = refused("hvdlm.train", "--data", byte_dataset, "--out", run,
                   "model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.seq_len=16")
    assert "writable by group or others" in line and "train.shared_run_dir" in line, line
    # Opted in: the run starts, but appends only to its own regular files, never a link.
    line = refused("hvdlm.train", "--data", byte_dataset, "--out", run, "train.max_steps=1",
                   "model.n_layer=1", "model.n_embd=16", "model.n_head=2", "model.seq_len=16",
                   "train.shared_run_dir=true")
    assert "log.txt" in line or "metrics.jsonl" in line, line
    assert snapshot(*precious) == before


def test_temporary_names_cannot_be_guessed(victim_run):
    from hvdlm import output
    names = {output.temp_name(victim_run / "env.json").name for _ in range(50)}
    assert len(names) == 50 and all(n.startswith(".env.json.tmp") for n in names)
    assert f".env.json.tmp{os.getpid()}" not in names  # the pid is in RUN/.lock for all to see


def test_someone_elses_partial_folder_is_refused_and_left_alone(attacker, victim_run, open_dir):
    outs = open_dir / "exports"
    outs.mkdir()
    outs.chmod(0o777)
    make = ("import os, sys; os.mkdir(sys.argv[1]); "
            "open(os.path.join(sys.argv[1], 'their-work.txt'), 'w').write('theirs')")
    proc = attacker.run([sys.executable, "-c", make, outs / "model.partial"])
    assert proc.returncode == 0, proc.stderr
    line = refused("hvdlm.export", "--run", victim_run, "--out", outs / "model")
    assert "model.partial" in line and "not left by hvdlm" in line, line
    assert (outs / "model.partial" / "their-work.txt").read_text() == "theirs"
    assert not (outs / "model").exists()


def test_out_that_is_a_link_or_inside_checkpoints_is_refused_before_any_work(victim_run,
                                                                             tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    line = refused("hvdlm.export", "--run", victim_run, "--out", tmp_path / "link")
    assert "symbolic link" in line, line
    assert list((tmp_path / "empty").iterdir()) == []
    inside = victim_run / "checkpoints" / "step-99999999.pt"
    before = sorted(p.name for p in inside.parent.iterdir())
    line = refused("hvdlm.export", "--run", victim_run, "--out", inside)
    assert "checkpoints" in line, line
    assert sorted(p.name for p in inside.parent.iterdir()) == before


def test_explain_output_is_private_under_umask_022(attacker, victim_run, open_dir):
    out = open_dir / "explained"
    script = ("import os, sys; os.umask(0o022); from hvdlm.explain.command import main; "
              "sys.exit(main(sys.argv[1:]))")
    import subprocess
    from tests.conftest import ROOT
    proc = subprocess.run([sys.executable, "-c", script, "--run", victim_run, "--text",
                           "def f(x):\n    return x", "--out", out], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert stat.S_IMODE(out.stat().st_mode) & 0o077 == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    lines = _probe(attacker, files)
    assert files and all(line.startswith("denied") for line in lines), lines
