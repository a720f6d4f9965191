"""hvdlm.cluster.requeue's command in this process (tests/cluster/test_requeue.py runs it as
slurm/train.sbatch does): what it prints, exits with and asks scontrol, for each ending; the
exact endings of the rule's corners. A fake `scontrol` stands in for Slurm's.

    .venv/bin/python -m pytest tests/cluster/test_requeue_command.py
"""
from __future__ import annotations

import subprocess

import pytest

from hvdlm.cluster import requeue
from hvdlm.cluster.requeue import MAX_REQUEUES, Ending, after_stop, decide
from hvdlm.errors import EXIT_STOPPED


class Scontrol:
    """Records the commands run; answers with `status`."""

    def __init__(self, status: int) -> None:
        self.status, self.calls = status, []

    def __call__(self, argv, **_):
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(argv, self.status)


@pytest.fixture
def job(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    marker = tmp_path / ".stopped.4242.0"
    marker.touch()
    return marker


def run(monkeypatch, *argv: str, scontrol_status: int = 0) -> tuple[int, Scontrol]:
    scontrol = Scontrol(scontrol_status)
    monkeypatch.setattr(requeue.subprocess, "run", scontrol)
    try:
        return requeue.main(list(argv)), scontrol
    except SystemExit as stop:  # argparse
        return stop.code, scontrol


def test_a_stop_to_requeue_is_requeued_with_scontrol(monkeypatch, job, capsys):
    code, scontrol = run(monkeypatch, "--status", "0", "--stop-marker", str(job),
                         "--signal", "USR1", "--run", "runs/x")
    assert code == 0 and scontrol.calls == [["scontrol", "requeue", "4242"]]
    assert capsys.readouterr().out == ("train.sbatch: checkpoint written; job 4242 requeued, it "
                                       "resumes from runs/x\n")
    assert not job.exists()


def test_a_failed_requeue_says_so_and_ends_stopped(monkeypatch, job, capsys):
    code, _ = run(monkeypatch, "--status", str(EXIT_STOPPED), "--stop-marker", str(job),
                  "--run", "runs/x", scontrol_status=1)
    assert code == EXIT_STOPPED
    err = capsys.readouterr().err
    assert err == ("train.sbatch: error: scontrol requeue failed (submitted with --no-requeue?);"
                   " resubmit to resume from runs/x\n")


def test_finished_and_failed_steps_are_not_requeued(monkeypatch, job, capsys):
    for status in (0, 3):
        job.touch() if status else job.unlink()
        code, scontrol = run(monkeypatch, "--status", str(status), "--stop-marker", str(job))
        assert (code, scontrol.calls) == (status, [])
        assert not job.exists()
    assert capsys.readouterr().out == ""


def test_the_restart_count_and_the_cap(monkeypatch, job, capsys):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    code, scontrol = run(monkeypatch, "--status", "0", "--stop-marker", str(job),
                         "--max-requeues", "3")
    assert (code, len(scontrol.calls)) == (0, 1)
    job.touch()
    code, scontrol = run(monkeypatch, "--status", "0", "--stop-marker", str(job),
                         "--max-requeues", "2")
    assert (code, scontrol.calls) == (EXIT_STOPPED, [])
    assert "--max-requeues 2 reached" in capsys.readouterr().out


@pytest.mark.parametrize("option, value, name", [
    ("--max-requeues", "-1", "--max-requeues"), ("--max-requeues", "two", "--max-requeues"),
    (None, "x", "SLURM_RESTART_COUNT")])
def test_counts_must_be_whole_numbers(monkeypatch, job, capsys, option, value, name):
    argv = ["--status", "0", "--stop-marker", str(job)]
    if option:
        argv += [option, value]
    else:
        monkeypatch.setenv("SLURM_RESTART_COUNT", value)
    code, scontrol = run(monkeypatch, *argv)
    assert (code, scontrol.calls) == (2, [])
    assert capsys.readouterr().err == (f"hvdlm.cluster.requeue: error: {name} must be a whole "
                                       f"number >= 0, not {value!r}\n")


def test_the_rules_corners():
    assert after_stop(0, 5, "TERM") == Ending(False, EXIT_STOPPED,
                                              "stopped after a checkpoint (TERM); not requeued")
    assert after_stop(MAX_REQUEUES - 1) == Ending(True, 0)
    assert not after_stop(MAX_REQUEUES).requeue
    assert decide(EXIT_STOPPED, False, "USR1", max_requeues=1) == Ending(True, 0)  # none yet
    assert decide(0, True, "USR1") == Ending(True, 0)
    assert MAX_REQUEUES == 100  # the default the README and docs/cluster.md state


def test_a_stop_on_term_is_left_to_slurm(monkeypatch, job, capsys):
    code, scontrol = run(monkeypatch, "--status", "0", "--stop-marker", str(job),
                         "--signal", "TERM")
    assert (code, scontrol.calls) == (EXIT_STOPPED, [])
    assert capsys.readouterr().out == ("train.sbatch: stopped after a checkpoint (TERM); not "
                                       "requeued\n")


def test_a_requeue_outside_a_job_is_one_line(monkeypatch, job, capsys):
    monkeypatch.delenv("SLURM_JOB_ID")
    code, scontrol = run(monkeypatch, "--status", "0", "--stop-marker", str(job))
    assert (code, scontrol.calls) == (2, [])
    assert capsys.readouterr().err == ("hvdlm.cluster.requeue: error: SLURM_JOB_ID is not set: "
                                       "run this inside the batch job\n")
