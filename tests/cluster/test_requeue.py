"""hvdlm.cluster.requeue: how slurm/train.sbatch ends (finished, failed, stopped, requeued)."""
import os

import pytest

from hvdlm.cluster.requeue import Ending, decide
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
