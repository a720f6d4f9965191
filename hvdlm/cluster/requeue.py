"""How a preemptible training job stops and whether it comes back: the one protocol that
slurm/train.sbatch and hvdlm.submit share.

1. A stop is asked for. Slurm warns a job before its time limit and when it preempts it; by
   hand, `scancel --signal=...` does the same.
2. The ranks stop. Each rank's hvdlm.launch passes SIGUSR1 or SIGTERM on to hvdlm.train; all
   ranks agree on the step, rank 0 writes one checkpoint, and all exit EXIT_STOPPED (75).
3. Requeue or not: `decide` (from the step's exit status) and `after_stop` (the rule itself).
   A stop on SIGTERM (scancel, preemption) is left to Slurm, which requeues a job it preempts
   when PreemptMode=REQUEUE; any other stop is requeued until the job has been requeued
   `--max-requeues` times (MAX_REQUEUES by default), and past that it ends with EXIT_STOPPED
   and says so. The requeued job runs `hvdlm.train --resume auto`, continuing from the run
   folder's newest checkpoint.

Why the warning signal differs between the two, though the ranks' signal does not: sbatch's
warning goes to the batch shell (`--signal=B:USR1@120`), whose trap forwards SIGUSR1 to the
ranks. submitit reserves its own signal (USR2, or $SUBMITIT_PREEMPT_SIGNAL) for the handler
that calls `TrainRank.checkpoint()` in rank 0's task, and Slurm sends it to every process of
the step; the ranks block it (an unhandled USR2 would kill them) and get SIGUSR1 from
`checkpoint()` instead. The requeue count comes from where each keeps it: Slurm's
SLURM_RESTART_COUNT for sbatch, the pickled `TrainRank.requeues` for submitit.

slurm/train.sbatch runs this module once its job step has ended:

    python -m hvdlm.cluster.requeue --status S --stop-marker FILE [--signal TERM|USR1]
        [--max-requeues N] [--run RUN]

The ranks stopped after a checkpoint when the step's status is EXIT_STOPPED (horovodrun) or 0
with rank 0's marker file present (srun, where each task's wrapper turns EXIT_STOPPED into 0 so
that --kill-on-bad-exit spares rank 0's checkpoint). A stop to requeue is requeued with
`scontrol requeue`. The exit status is the job's.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hvdlm import cli
from hvdlm.errors import EXIT_STOPPED, UsageError

PROG = "train.sbatch"
MAX_REQUEUES = 100  # default cap: about four days of one-hour jobs
REQUEUE_SIGNAL = signal.SIGUSR1  # to the ranks: checkpoint, stop, come back
END_SIGNAL = signal.SIGTERM      # to the ranks: checkpoint, stop; Slurm decides the rest


@dataclass(frozen=True)
class Ending:
    requeue: bool
    exit_code: int
    message: str = ""


def after_stop(requeues: int, max_requeues: int = MAX_REQUEUES,
               signal_name: str | None = None) -> Ending:
    """The ranks stopped (or are stopping) after a checkpoint: requeue, or end saying why.

    requeues: how often this job was requeued already; signal_name: "TERM" for a stop that
    Slurm ends (not requeued here), anything else for a stop to requeue."""
    if signal_name == "TERM":
        return Ending(False, EXIT_STOPPED, "stopped after a checkpoint (TERM); not requeued")
    if requeues >= max_requeues:
        return Ending(False, EXIT_STOPPED, f"not requeued: --max-requeues {max_requeues} "
                                           "reached; submit again to resume from the checkpoint")
    return Ending(True, 0)


def decide(status: int, marker_present: bool, signal_name: str | None = None,
           requeues: int = 0, max_requeues: int = MAX_REQUEUES) -> Ending:
    """What the batch script does after its job step ended with `status`."""
    stopped = status == EXIT_STOPPED or (status == 0 and marker_present)
    if not stopped:
        return Ending(False, status)  # finished (0), or failed: the failing rank is named above
    return after_stop(requeues, max_requeues, signal_name)


def requeue(job_id: str, run: str) -> int:
    """`scontrol requeue` this job; the status the batch script exits with."""
    if subprocess.run(["scontrol", "requeue", job_id]).returncode == 0:
        print(f"{PROG}: checkpoint written; job {job_id} requeued, it resumes from {run}",
              flush=True)
        return 0
    print(f"{PROG}: error: scontrol requeue failed (submitted with --no-requeue?); resubmit "
          f"to resume from {run}", file=sys.stderr, flush=True)
    return EXIT_STOPPED


def _count(text: str, name: str) -> int:
    if not text.isdigit():
        raise UsageError(f"{name} must be a whole number >= 0, not {text!r}")
    return int(text)


def _main(argv: Sequence[str] | None) -> int:
    p = cli.ArgumentParser(prog="hvdlm.cluster.requeue", description=__doc__.split("\n")[0])
    p.add_argument("--status", type=int, required=True, help="the job step's exit status")
    p.add_argument("--stop-marker", required=True, help="rank 0's marker file (removed here)")
    p.add_argument("--signal", choices=("TERM", "USR1", "none"), default="none")
    p.add_argument("--max-requeues", default=str(MAX_REQUEUES), metavar="N",
                   help="requeue at most N times (default %(default)s)")
    p.add_argument("--run", default="the run folder", help="the run folder, for messages")
    args = p.parse_args(argv)
    max_requeues = _count(args.max_requeues, "--max-requeues")
    # Slurm's own count of this job's requeues (any cause); the one hand-over it has.
    requeues = _count(os.environ.get("SLURM_RESTART_COUNT") or "0", "SLURM_RESTART_COUNT")
    marker = Path(args.stop_marker)
    ending = decide(args.status, marker.exists(), args.signal, requeues, max_requeues)
    marker.unlink(missing_ok=True)
    if ending.message:
        print(f"{PROG}: {ending.message}", flush=True)
    if not ending.requeue:
        return ending.exit_code
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        raise UsageError("SLURM_JOB_ID is not set: run this inside the batch job")
    return requeue(job_id, args.run)


main = cli.entry_point(_main, "hvdlm.cluster.requeue")

if __name__ == "__main__":
    sys.exit(main())
