"""How a preemptible batch job ends: finished, failed, or stopped after a checkpoint and requeued.

    python -m hvdlm.cluster.requeue --status S --stop-marker FILE [--signal TERM|USR1]

slurm/train.sbatch calls this once its job step has ended (the trap that forwards USR1/TERM
to the ranks stays in the script). The ranks stopped after a checkpoint when the step's status
is EXIT_STOPPED (horovodrun) or 0 with rank 0's marker file present (srun, where each task's
wrapper turns EXIT_STOPPED into 0 so that --kill-on-bad-exit spares rank 0's checkpoint). A
stop on USR1 (the time limit) is requeued with `scontrol requeue`; one on TERM (scancel,
preemption) is left to Slurm. The exit status is the job's.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hvdlm import cli
from hvdlm.errors import EXIT_STOPPED, UsageError

PROG = "train.sbatch"


@dataclass(frozen=True)
class Ending:
    requeue: bool
    exit_code: int
    message: str = ""


def decide(status: int, marker_present: bool, signal: str | None) -> Ending:
    """What the batch script does after its job step ended with `status`."""
    stopped = status == EXIT_STOPPED or (status == 0 and marker_present)
    if not stopped:
        return Ending(False, status)  # finished (0), or failed: the failing rank is named above
    if signal == "TERM":
        return Ending(False, EXIT_STOPPED, "stopped after a checkpoint (TERM); not requeued")
    return Ending(True, 0)


def requeue(job_id: str, run: str) -> int:
    """`scontrol requeue` this job; the status the batch script exits with."""
    if subprocess.run(["scontrol", "requeue", job_id]).returncode == 0:
        print(f"{PROG}: checkpoint written; job {job_id} requeued, it resumes from {run}",
              flush=True)
        return 0
    print(f"{PROG}: error: scontrol requeue failed (submitted with --no-requeue?); resubmit "
          f"to resume from {run}", file=sys.stderr, flush=True)
    return EXIT_STOPPED


def _main(argv: Sequence[str] | None) -> int:
    p = cli.ArgumentParser(prog="hvdlm.cluster.requeue", description=__doc__.split("\n")[0])
    p.add_argument("--status", type=int, required=True, help="the job step's exit status")
    p.add_argument("--stop-marker", required=True, help="rank 0's marker file (removed here)")
    p.add_argument("--signal", choices=("TERM", "USR1", "none"), default="none")
    p.add_argument("--run", default="the run folder", help="the run folder, for messages")
    args = p.parse_args(argv)
    marker = Path(args.stop_marker)
    ending = decide(args.status, marker.exists(), args.signal)
    marker.unlink(missing_ok=True)
    if ending.message:
        print(f"{PROG}: {ending.message}", flush=True)
    if not ending.requeue:
        return ending.exit_code
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise UsageError("SLURM_JOB_ID is not set: run this inside the batch job")
    return requeue(job_id, args.run)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog="hvdlm.cluster.requeue")


if __name__ == "__main__":
    sys.exit(main())
