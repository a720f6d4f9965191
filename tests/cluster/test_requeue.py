"""hvdlm.cluster.requeue: how slurm/train.sbatch and hvdlm.submit end (finished, failed, stopped,
requeued up to --max-requeues)."""
import os

import pytest

from hvdlm.cluster.requeue import Ending, after_stop, decide
from hvdlm.errors import EXIT_STOPPED
from tests.conftest import run_module


@pytest.mark.parametrize("status, marker, signal, expected", [
    (0, False, None, Ending(False, 0)),                     # finished
    (3, False, None, Ending(False, 3)),                     # failed: the job fails with it
    (137, True, "USR1", Ending(False, 137)),                # a crash is never a stop
    (0, True, "USR1", Ending(True, 0)),                     # srun: rank 0's marker, requeue
    (EXIT_STOPPED, False, "USR1", Ending(True, 0)),         # horovodrun's own status
    (EXIT_STOPPED, False, None, Ending(True, 0)),           # stopped by hand (scancel -s USR1)
])
def test_decide(status, marker, signal, expected):
    assert decide(status, marker, signal) == expected


def test_a_stop_on_term_is_not_requeued():
    ending = decide(0, True, "TERM")
    assert not ending.requeue and ending.exit_code == EXIT_STOPPED and "TERM" in ending.message


def test_command_removes_the_marker_and_exits_with_the_decision(tmp_path):
    marker = tmp_path / ".stopped.1.0"
    marker.touch()
    proc = run_module("hvdlm.cluster.requeue", "--status", "0", "--stop-marker", marker,
                      "--signal", "TERM")
    assert proc.returncode == EXIT_STOPPED and "not requeued" in proc.stdout
    assert not marker.exists()
    proc = run_module("hvdlm.cluster.requeue", "--status", "9", "--stop-marker", marker)
    assert proc.returncode == 9 and proc.stdout == ""


def test_requeue_outside_a_job_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    marker = tmp_path / "m"
    marker.touch()
    proc = run_module("hvdlm.cluster.requeue", "--status", "0", "--stop-marker", marker,
                      env={**env, "SLURM_JOB_ID": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "hvdlm.cluster.requeue: error: SLURM_JOB_ID is not set: run this inside the batch job"]


@pytest.mark.parametrize("requeues, cap, requeued", [(0, 1, True), (2, 3, True), (3, 3, False),
                                                     (0, 0, False), (7, 3, False)])
def test_the_cap_counts_requeues_so_far(requeues, cap, requeued):
    ending = decide(EXIT_STOPPED, False, "USR1", requeues, cap)
    assert ending.requeue == requeued
    if not requeued:
        assert ending.exit_code == EXIT_STOPPED
        assert ending.message == (f"not requeued: --max-requeues {cap} reached; submit again "
                                  "to resume from the checkpoint")
    assert decide(5, False, "USR1", requeues, cap) == Ending(False, 5)  # a failure stays one


def test_sbatch_and_submitit_share_the_rule():
    """TrainRank (submitit) asks the same function the sbatch command asks."""
    from hvdlm.cluster.submit import TrainRank
    for requeues, cap in ((0, 2), (2, 2), (0, 0)):
        rank = TrainRank(["--data", "d"], max_requeues=cap, requeues=requeues)
        assert rank.after_stop() == after_stop(requeues, cap) == decide(EXIT_STOPPED, False,
                                                                         None, requeues, cap)


def test_command_honours_max_requeues_with_slurms_restart_count(tmp_path):
    marker = tmp_path / ".stopped.1.3"
    marker.touch()
    env = {**os.environ, "SLURM_JOB_ID": "1", "SLURM_RESTART_COUNT": "3"}
    proc = run_module("hvdlm.cluster.requeue", "--status", "0", "--stop-marker", marker,
                      "--signal", "USR1", "--max-requeues", "3", env=env)
    assert proc.returncode == EXIT_STOPPED and not marker.exists()
    assert proc.stdout.strip() == ("train.sbatch: not requeued: --max-requeues 3 reached; "
                                   "submit again to resume from the checkpoint")
    proc = run_module("hvdlm.cluster.requeue", "--status", "0", "--stop-marker", marker,
                      "--max-requeues", "-1", env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "hvdlm.cluster.requeue: error: --max-requeues must be a whole number >= 0, not '-1'"]
