"""Submit a training run with submitit: one Horovod rank per task, on Slurm or on this machine.

    python -m hvdlm.submit --nodes 2 --ntasks-per-node 4 --gpus-per-node 4 --time 1-00:00:00 \\
        --slurm account=proj --slurm constraint=a100 --setup "module load cuda" -- \\
        --data data --out runs/gpt model.n_layer=12
    python -m hvdlm.submit --nodes 1 --ntasks-per-node 2 --wait -- --data data --out runs/x
    python -m hvdlm.submit --cluster local --ntasks-per-node 2 --wait -- --data data --out runs/x

From Python:

    from hvdlm.cluster.submit import submit_training, wait_for_ranks
    job = submit_training(["--data", "data", "--out", "runs/x"], ntasks_per_node=2,
                          time="12:00:00", slurm={"qos": "high"}, setup=["module load cuda"])
    wait_for_ranks(job, timeout_s=3600)     # HvdlmError naming the failed rank, if any

Everything after `--` goes to `python -m hvdlm.train`. Each submitit task runs
`python -m hvdlm.launch -- python -m hvdlm.train TRAIN-ARGS` (hvdlm.launch reads the task's
place from Slurm's or submitit-local's environment). On preemption or near the time limit
Slurm sends submitit's signal (USR2, `--signal=USR2@90`); rank 0's `TrainRank.checkpoint()`
asks the ranks to stop at the next step boundary (SIGUSR1: all ranks agree on the step, rank 0
writes a checkpoint), and submitit requeues the job with the same arguments plus
`--resume auto`: the arguments are pickled, never the model. Each stop counts against
`--max-requeues` (timeouts and preemptions alike); past it the ranks still checkpoint, and the
job ends saying so instead of requeueing. The stop/requeue rule is slurm/train.sbatch's too:
hvdlm/cluster/requeue.py.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import submitit

from hvdlm import cli
from hvdlm.cluster.children import describe_status, exit_status, split_command
from hvdlm.cluster.requeue import MAX_REQUEUES, REQUEUE_SIGNAL, Ending, after_stop
from hvdlm.cluster.slurm_options import sbatch_options, slurm_minutes
from hvdlm.errors import EXIT_STOPPED, HvdlmError, UsageError

PROG = "hvdlm.submit"
STOP_TIMEOUT_S = 60.0    # rank 0's wait for the ranks to checkpoint; inside submitit's 90 s notice
REQUEUE_WAIT_S = 120.0   # a stopped rank > 0 waits this long for the requeue to end its task


class RankFailed(HvdlmError):
    """One rank's hvdlm.launch/hvdlm.train exited with a failure status."""


@dataclass
class Resources:
    """What one job asks Slurm (or this machine) for."""

    nodes: int = 1
    ntasks_per_node: int = 1  # ranks per node; one per GPU when there are GPUs
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    time_min: int = 60
    partition: str | None = None
    slurm: dict[str, str | bool] = field(default_factory=dict)  # more sbatch options
    setup: list[str] = field(default_factory=list)  # shell lines before the ranks start
    max_requeues: int = MAX_REQUEUES

    @property
    def ranks(self) -> int:
        return self.nodes * self.ntasks_per_node


def with_resume_auto(train_args: Sequence[str]) -> list[str]:
    """train_args with any --resume replaced by `--resume auto` (a resubmission continues)."""
    out: list[str] = []
    skip = False
    for arg in train_args:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            out.append(arg)
    return [*out, "--resume", "auto"]


def _preempt_signal() -> signal.Signals:
    # submitit's own rule (SUBMITIT_PREEMPT_SIGNAL, default USR2), so we block the same signal.
    return signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]


@contextlib.contextmanager
def _blocked(sig: signal.Signals) -> Iterator[None]:
    """Block `sig` in this thread while inside; a child started here inherits the mask."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _rank_from_environ() -> int:
    for name in ("SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _exited(pid: int) -> int | None:
    """The exit status of child `pid` once it has ended, without reaping it (Popen still does)."""
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None or info.si_pid == 0:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status


class TrainRank(submitit.helpers.Checkpointable):
    """The submitit callable: this task becomes one rank of the run (picklable: arguments only)."""

    def __init__(self, train_args: Sequence[str], python: str = sys.executable,
                 max_requeues: int = MAX_REQUEUES, requeues: int = 0,
                 launch_args: Sequence[str] = ()):
        self.train_args = list(train_args)
        self.python = python
        self.max_requeues, self.requeues = max_requeues, requeues
        self.launch_args = list(launch_args)  # hvdlm.launch's options (--rendezvous-dir, --iface)
        self._child: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"train_args": self.train_args, "python": self.python,  # never the live process
                "max_requeues": self.max_requeues, "requeues": self.requeues,
                "launch_args": self.launch_args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def after_stop(self) -> Ending:
        """The shared rule (hvdlm.cluster.requeue): requeue unless the cap is reached."""
        return after_stop(self.requeues, self.max_requeues)

    def command(self) -> list[str]:
        return [self.python, "-m", "hvdlm.launch", *self.launch_args, "--", self.python, "-m",
                "hvdlm.train", *self.train_args]

    def __call__(self) -> dict[str, Any]:
        rank = _rank_from_environ()
        # Slurm sends the preemption signal to every process of the step: the ranks must not
        # die of it; only this process (submitit's handler) acts on it.
        with _blocked(_preempt_signal()):
            self._child = subprocess.Popen(self.command())
        status = exit_status(self._child.wait())
        ending = self.after_stop()
        if status == EXIT_STOPPED and rank != 0 and ending.requeue:
            self._await_requeue(rank)
        if status == EXIT_STOPPED and not ending.requeue:
            raise RankFailed(f"rank {rank} stopped after a checkpoint; {ending.message}")
        if status == EXIT_STOPPED:
            raise RankFailed(f"rank {rank} stopped after a checkpoint (status {EXIT_STOPPED}) "
                             "without a requeue; submit again to resume")
        if status != 0:
            raise RankFailed(f"rank {rank}: hvdlm.train {describe_status(status)} "
                             f"(status {status})")
        return {"rank": rank, "host": os.uname().nodename}

    @staticmethod
    def _await_requeue(rank: int) -> None:
        # Rank 0's checkpoint() stopped us and is requeueing the job, which ends this task.
        # Returning a result now would leave a stale result file behind for the requeued job.
        print(f"{PROG}: rank {rank} stopped after a checkpoint; waiting for the requeue",
              flush=True)
        time.sleep(REQUEUE_WAIT_S)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on rank 0 at preemption or timeout: stop the ranks after a
        checkpoint, then resubmit the same run resuming from it."""
        child = self._child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(REQUEUE_SIGNAL)  # hvdlm.launch passes it on to hvdlm.train
            deadline = time.monotonic() + STOP_TIMEOUT_S
            status = _exited(child.pid)
            while status is None and time.monotonic() < deadline:
                time.sleep(0.1)
                status = _exited(child.pid)
            print(f"{PROG}: ranks stopped (status {status}); requeueing with --resume auto"
                  if status is not None else f"{PROG}: ranks did not stop within "
                  f"{STOP_TIMEOUT_S:g} s; requeueing from the latest periodic checkpoint",
                  flush=True)
        ending = self.after_stop()
        if not ending.requeue:
            print(f"{PROG}: {ending.message}", flush=True)
            return None  # submitit then ends the job instead of requeueing it
        return submitit.helpers.DelayedSubmission(TrainRank(
            with_resume_auto(self.train_args), self.python, self.max_requeues, self.requeues + 1,
            self.launch_args))


def make_executor(cluster: str, folder: str | Path, res: Resources):
    """A submitit executor for `res` on `cluster` (slurm | local)."""
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise UsageError("no Slurm found (sbatch is not on PATH): run this on a Slurm login "
                         "node, or use --cluster local")
    if cluster == "local" and res.nodes != 1:
        raise UsageError("--cluster local runs on this machine: --nodes must be 1")
    if cluster == "local" and (res.slurm or res.setup):
        raise UsageError("--slurm and --setup are for --cluster slurm")
    if cluster == "local":
        # submitit's local controller makes its folder before expanding %j (a folder literally
        # named "%j"); the files' names hold the job id anyway, so stop above the placeholder.
        folder = submitit.core.utils.JobPaths.get_first_id_independent_folder(folder)
    # TrainRank counts every requeue; submitit's own limit (3 timeouts) must not come first.
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster,
                                     slurm_max_num_timeout=res.max_requeues)
    params: dict[str, Any] = dict(name="hvdlm-train", nodes=res.nodes,
                                  tasks_per_node=res.ntasks_per_node, timeout_min=res.time_min)
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    if cluster == "slurm":
        params["cpus_per_task"] = res.cpus_per_task
        # A rank that dies must end the others at once; they would wait in an allreduce.
        # srun does not take --cpus-per-task from the allocation (Slurm 22.05+): repeat it.
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1",
                                     f"--cpus-per-task={res.cpus_per_task}"]
        params["slurm_additional_parameters"] = {"requeue": True, **res.slurm}
        if res.setup:
            params["slurm_setup"] = list(res.setup)
        if res.partition:
            params["slurm_partition"] = res.partition
    executor.update_parameters(**params)
    return executor


def submit_training(train_args: Sequence[str], cluster: str = "slurm", nodes: int = 1,
                    ntasks_per_node: int = 1, gpus_per_node: int = 0, cpus_per_task: int = 1,
                    time: str | int = 60, partition: str | None = None,
                    slurm: Mapping[str, str | bool] | Sequence[str] = (),
                    setup: Sequence[str] = (), max_requeues: int = MAX_REQUEUES,
                    folder: str | Path = "logs/submitit/%j", python: str = sys.executable,
                    rendezvous_dir: str | Path | None = None, iface: str | None = None):
    """Submit `python -m hvdlm.train TRAIN_ARGS` as nodes x ntasks_per_node ranks; return the
    submitit Job (multi-task: use `job.results()` or `wait_for_ranks`).

    time: minutes or any sbatch format ("HH:MM:SS", "D-HH:MM"); slurm: more sbatch options,
    {"constraint": "a100", "exclusive": True} or ["constraint=a100", "exclusive"]; setup: shell
    lines run before the ranks (e.g. "module load cuda"); rendezvous_dir, iface: hvdlm.launch's
    --rendezvous-dir and --iface."""
    if cluster not in ("slurm", "local"):
        raise UsageError(f"--cluster must be slurm or local, not {cluster!r}")
    items = [f"{k}={v}" if v is not True else k for k, v in slurm.items()] \
        if isinstance(slurm, Mapping) else list(slurm)
    res = Resources(nodes, ntasks_per_node, gpus_per_node, cpus_per_task, slurm_minutes(time),
                    partition, sbatch_options(items), list(setup), max_requeues)
    for name in ("nodes", "ntasks_per_node", "cpus_per_task"):
        if getattr(res, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("gpus_per_node", "max_requeues"):
        if getattr(res, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0")
    launch_args = [*(["--rendezvous-dir", str(rendezvous_dir)] if rendezvous_dir else []),
                   *(["--iface", iface] if iface else [])]
    return make_executor(cluster, folder, res).submit(
        TrainRank(train_args, python, res.max_requeues, launch_args=launch_args))


def log_paths(job) -> list[Path]:
    return [p for i in range(job.num_tasks) for p in (job.task(i).paths.stdout,
                                                      job.task(i).paths.stderr)]


def _reason(error: BaseException) -> str:
    """One line from a task's error: our RankFailed message, else submitit's first line."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for line in reversed(lines):
        if f"{RankFailed.__name__}: " in line:
            return line.split(f"{RankFailed.__name__}: ", 1)[1]
    return lines[0] if lines else type(error).__name__


def _likely_cause_first(reason: str) -> int:
    # A rank killed by a signal (other than SIGTERM) is most likely what failed; the others
    # then lost their peer (an error status) or were ended by Slurm (SIGTERM).
    if "killed by" in reason:
        return 2 if "SIGTERM" in reason else 0
    return 1


def wait_for_ranks(job, timeout_s: float, poll_s: float = 1.0) -> list[Any]:
    """Wait (at most timeout_s) until every rank has ended; return their results, or raise
    HvdlmError naming the failed ranks (or the deadline)."""
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            raise HvdlmError(f"job {job.job_id} has not finished after {timeout_s:g} s; it "
                             f"keeps running (cancel it with scancel {job.job_id})")
        time.sleep(poll_s)
    failures = []
    for i in range(job.num_tasks):
        error = job.task(i).exception()
        if error is not None:
            failures.append(_reason(error))
    failures.sort(key=_likely_cause_first)
    if failures:
        raise HvdlmError(f"job {job.job_id} failed: " + "; ".join(failures)
                         + f" (logs: {job.task(0).paths.folder})")
    return job.results()


def _main(argv: Sequence[str] | None) -> int:
    opts, train_args = split_command(sys.argv[1:] if argv is None else argv)
    p = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                           usage="%(prog)s [options] -- TRAIN-ARGS...",
                           epilog="TRAIN-ARGS go to python -m hvdlm.train, e.g. -- --data DIR "
                                  "--out RUN model.n_layer=4")
    p.add_argument("--cluster", choices=("slurm", "local"), default="slurm")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--ntasks-per-node", "--tasks-per-node", type=int, default=1,
                   help="ranks per node (one per GPU)")
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--time", default="60", help="time limit: minutes, HH:MM:SS, D-HH:MM, ...")
    p.add_argument("--partition")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="another sbatch option, e.g. account=proj, mem=64G, exclusive "
                        "(repeatable)")
    p.add_argument("--setup", action="append", default=[], metavar="CMD",
                   help="shell line run before the ranks, e.g. 'module load cuda' (repeatable)")
    p.add_argument("--max-requeues", type=int, default=MAX_REQUEUES, metavar="N",
                   help="requeue after at most N timeouts or preemptions (default %(default)s)")
    p.add_argument("--rendezvous-dir", metavar="DIR",
                   help="hvdlm.launch's: a folder every node sees (default ~/.hvdlm/rendezvous)")
    p.add_argument("--iface", help="hvdlm.launch's: the interface rank 0 serves the rendezvous on")
    p.add_argument("--folder", default="logs/submitit/%j",
                   help="submitit's folder for pickles and logs (%%j = job id; with "
                        "--cluster local the folder above the first placeholder)")
    p.add_argument("--wait", action="store_true", help="block until every rank has ended")
    p.add_argument("--wait-timeout", type=float, metavar="S",
                   help="with --wait: give up after S seconds (default: twice --time + 10 min)")
    args = p.parse_args(opts)
    if not train_args:
        raise UsageError("give hvdlm.train's arguments after --, e.g. -- --data DIR --out RUN")
    job = submit_training(train_args, args.cluster, args.nodes, args.ntasks_per_node,
                          args.gpus_per_node, args.cpus_per_task, args.time, args.partition,
                          args.slurm, args.setup, args.max_requeues, args.folder,
                          rendezvous_dir=args.rendezvous_dir, iface=args.iface)
    print(f"{PROG}: job {job.job_id} submitted ({args.nodes * args.ntasks_per_node} ranks, "
          f"{args.cluster})", flush=True)
    for path in log_paths(job):
        print(f"  {path}", flush=True)
    if not args.wait:
        return 0
    timeout = args.wait_timeout or 2 * slurm_minutes(args.time) * 60 + 600
    results = wait_for_ranks(job, timeout)
    print(f"{PROG}: job {job.job_id} finished: {len(results)} ranks succeeded", flush=True)
    return 0


main = cli.entry_point(_main, PROG)

