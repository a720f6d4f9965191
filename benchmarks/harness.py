"""Launching benchmark ranks, one way for every benchmark: the driver side and the rank side.

Driver side: a configuration name with extra environment (`hvdlm+HOROVOD_CYCLE_TIME=5`,
`split_config`); `Launch`, where and how a driver starts N ranks (on this machine, on emulated
hosts via hvdlm.launch's `run_on_hosts`, or as one job step of the current Slurm allocation with
`--launcher srun`), made from the options every driver shares (`add_common`); the emulated
cluster (`emulated_cluster`: tests/infra/emulate-cluster.sh up/down).

Rank side: `env_rank` (the HOROVOD_* variables the launcher writes, also read by the
torch.distributed peers), `pin_rank` (an equal, disjoint share of the cores per rank, before any
thread pool starts), `quiet` (a rank's output to a log file), `StepClock`, and result files:
each rank writes JSON (`write_result`) that the driver reads back (`read_result`). What the
ranks of one job must agree on reaches them as flags of the rank command, which the driver
adds (`Launch.run`): `--cores-per-rank`, `--torch-port` and `--device` (benchmarks.ranks
reads them). On `--device cuda` each rank takes its GPU as hvdlm's trainer does
(hvdlm/cluster/devices.py: local rank i of a node takes GPU i when all are visible, else the
one its task was given) and gets the NCCL settings of `nccl_env`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from benchmarks import ROOT
from hvdlm.cluster import devices
from hvdlm.cluster.launch import run_on_hosts
from hvdlm.output import write_atomic

EMULATE_SCRIPT = ROOT / "tests" / "infra" / "emulate-cluster.sh"


# ---------------------------------------------------------------- driver side

def split_config(config: str, known: Sequence[str]) -> tuple[str, dict[str, str]]:
    """`hvdlm+HOROVOD_CYCLE_TIME=5+OMP_NUM_THREADS=1` -> ("hvdlm", {extra env}): variants."""
    base, *pairs = config.split("+")
    if base not in known:
        raise SystemExit(f"unknown config {base!r}: choose from {', '.join(known)}")
    return base, dict(p.split("=", 1) for p in pairs)


def cores_per_rank(max_ranks_per_host: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // max(1, max_ranks_per_host))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def module_cmd(module: str, *args: Any) -> list[str]:
    """`python -m MODULE ARGS...` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


def _with_root_on_path(env: dict[str, str]) -> dict[str, str]:
    """Ranks run `python -m benchmarks....` from anywhere (network namespaces, srun tasks)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path}


@dataclass(frozen=True)
class Launch:
    """Where and how a driver starts its ranks: on this machine, or on `hosts` emulated hosts,
    or (`srun`) as job steps of the current Slurm allocation; at nice level `nice`; `tmp` is
    a folder every rank can see, for the ranks' result files (None: the system's)."""
    hosts: int = 0
    srun: bool = False
    nice: int = 0
    tmp: str | None = None
    device: str = "cpu"  # cpu or cuda: what the ranks compute and communicate on

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Launch":
        """From `add_common`'s options (and --hosts, --out). Under srun the result files go
        to --out unless --tmp says otherwise: node-local /tmp is not shared."""
        srun = args.launcher == "srun"
        if srun:
            Path(args.out).mkdir(parents=True, exist_ok=True)
        tmp = args.tmp or (str(Path(args.out).resolve()) if srun else None)
        device = getattr(args, "device", "cpu")
        require_device(device)
        return cls(getattr(args, "hosts", 0), srun, args.nice, tmp, device)

    def run(self, np_: int, cmd: Sequence[str], env: dict[str, str], timeout: float = 600,
            share: int = 0) -> None:
        """Run the rank command `cmd` (benchmarks.horovod_ranks or torch_ranks) as np_ ranks.

        share: cores per rank (0: cores // ranks on this host); emulated hosts share this
        machine's cores, so their ranks are numbered as if all were on one host. Under srun
        each node's ranks split that node's cores instead (--cores-per-rank 0).
        """
        env = _with_root_on_path(env)
        cmd = [*cmd, "--torch-port", str(free_port()), "--device", self.device]
        if self.srun:
            return run_srun(np_, [*cmd, "--cores-per-rank", "0"], env, timeout)
        cmd += ["--cores-per-rank", str(share or cores_per_rank(np_))]
        if self.hosts:
            per, extra = divmod(np_, self.hosts)
            plan = [(f"node{i + 1:02d}", per + (i < extra)) for i in range(self.hosts)]
            plan = [(h, n) for h, n in plan if n]
        else:
            plan = [("localhost", np_)]
        if self.nice:  # e.g. -10 (root): other users' load disturbs the figures less
            cmd = ["nice", "-n", str(self.nice), *cmd]
        status = run_on_hosts(plan, cmd, netns=bool(self.hosts), env=env, timeout=timeout)
        if status != 0:
            raise RuntimeError(f"benchmark ranks failed (exit {status}): {' '.join(cmd)}")


def run_srun(np_: int, cmd: Sequence[str], env: dict[str, str], timeout: float) -> None:
    """Inside a Slurm allocation: one job step of np_ tasks, each a rank via hvdlm.launch.

    Ranks fill whole nodes first (the allocation's tasks per node); each node's ranks split
    its cores (`pin_rank`).
    """
    per_node = int(os.environ.get("SLURM_NTASKS_PER_NODE", "0").split("(")[0] or 0) or 1
    nodes = max(1, -(-np_ // per_node))
    argv = ["srun", f"--nodes={nodes}", f"--ntasks={np_}", "--kill-on-bad-exit=1",
            *module_cmd("hvdlm.launch", "--"), *cmd]
    status = subprocess.run(argv, env={**os.environ, **env}, timeout=timeout).returncode
    if status != 0:
        raise RuntimeError(f"srun benchmark step failed (exit {status}): {' '.join(cmd)}")


@contextlib.contextmanager
def emulated_cluster(prog: str) -> Iterator[Callable[..., None]]:
    """Yields shape(N, rate, delay=""): (re)build N emulated hosts with that egress; the
    cluster is taken down when the block ends, however it ends.

    Refuses to start while someone else's cluster is up (it is neither reshaped nor removed).
    """
    if Path("/run/netns/node01").exists():
        raise SystemExit(f"{prog}: an emulated cluster is already up (someone's tests?); bring "
                         "it down first: tests/infra/emulate-cluster.sh down")

    def shape(n: int, rate: str, delay: str = "") -> None:
        cmd = [str(EMULATE_SCRIPT), "up", str(n), "--rate", rate]
        if delay and delay not in ("0", "0ms"):
            cmd += ["--delay", delay]
        subprocess.run(cmd, check=True, timeout=120, stdout=subprocess.DEVNULL)

    try:
        yield shape
    finally:
        subprocess.run([str(EMULATE_SCRIPT), "down"], check=True, timeout=120)


@contextlib.contextmanager
def emulated_hosts(prog: str, hosts: int, rate: str, delay: str = "") -> Iterator[None]:
    """With `hosts` > 0: that many emulated hosts (rate, delay) while inside; else nothing."""
    if not hosts:
        yield
        return
    with emulated_cluster(prog) as shape:
        shape(hosts, rate, delay)
        yield


def require_device(device: str) -> None:
    """SystemExit, one line, for --device cuda where torch sees no GPU."""
    if device != "cuda":
        return
    if not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise SystemExit(f"--device cuda: torch {torch.__version__} ({built}) sees no GPU "
                         "here; run on a GPU node, or use --device cpu")


def add_common(p: argparse.ArgumentParser, device: bool = False) -> None:
    """The options of `Launch.from_args`; `device`: also --device cpu|cuda."""
    if device:
        p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                       help="cuda: one GPU per rank, NCCL for every collective")
    p.add_argument("--launcher", choices=["local", "srun"], default="local",
                   help="local: ranks on this machine (or --hosts); srun: job steps of the "
                        "current Slurm allocation")
    p.add_argument("--nice", type=int, default=0,
                   help="run the ranks at this nice level (root: -10 keeps other load out)")
    p.add_argument("--tmp", help="a folder every rank can see, for their result files "
                   "(default: the system's temporary folder; with --launcher srun, --out)")


def rank_path(path: str | Path, rank: int) -> Path:
    """Rank R's own result file beside PATH."""
    return Path(f"{path}.rank{rank}")


def clear_results(path: str | Path, np_: int) -> None:
    for p in (Path(path), *(rank_path(path, r) for r in range(np_))):
        p.unlink(missing_ok=True)


def read_result(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- rank side

def write_result(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a rank's JSON result whole, or not at all, for the driver to read."""
    write_atomic(Path(path), json.dumps(payload).encode())


def env_rank() -> tuple[int, int, int, int]:
    """(rank, size, local_rank, local_size) from the HOROVOD_* variables; a lone process is 0/1."""
    get = os.environ.get
    return (int(get("HOROVOD_RANK", 0)), int(get("HOROVOD_SIZE", 1)),
            int(get("HOROVOD_LOCAL_RANK", 0)), int(get("HOROVOD_LOCAL_SIZE", 1)))


def pin_rank(cores_per_rank: int) -> list[int]:
    """Pin this rank to its share of the cores; see `pin_to_share`.

    The drivers that run every rank on this machine (emulated hosts included) pass
    --cores-per-rank k: ranks are then placed by global rank, k cores each, so a 1-rank
    baseline gets exactly the share of one rank of the largest run. With 0 (ranks started by
    srun on real nodes) each node's local ranks split that node's cores.
    """
    rank, _, local_rank, local_size = env_rank()
    if cores_per_rank:
        return pin_to_share(rank, cores_per_rank)
    return pin_to_share(local_rank, max(1, len(os.sched_getaffinity(0)) // local_size))


def pin_to_share(index: int, share: int) -> list[int]:
    """Pin this process to cores [index·share, (index+1)·share) of its allowed cores.

    Call before any thread pool starts (hvd.init, torch ops), so every thread inherits it.
    With fewer cores than index·share, ranks wrap round. Returns the cores kept.
    """
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, min(share, len(cores)))
    first = (index * share) % len(cores)
    mine = cores[first:first + share]
    os.sched_setaffinity(0, mine)
    return mine


def quiet(log: str | Path) -> None:
    """Send this rank's stdout and stderr (progress bars, logs) to `log`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def nccl_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What a CUDA rank adds to its environment before NCCL starts, user settings winning:
    NCCL's sockets on the interface the launcher chose for Gloo (HOROVOD_GLOO_IFACE, which
    hvdlm.launch writes from --iface), and NCCL_DEBUG=WARN so that a failing transport says
    why in the rank's log. Horovod's and torch.distributed's NCCL read the same variables,
    so both stacks run on the same network."""
    add = {"NCCL_DEBUG": "WARN"}
    if env.get("HOROVOD_GLOO_IFACE"):
        add["NCCL_SOCKET_IFNAME"] = env["HOROVOD_GLOO_IFACE"]
    return {k: v for k, v in add.items() if k not in env}


def rank_device(device: str) -> torch.device:
    """This rank's device: the CPU, or its own GPU by hvdlm's mapping (UsageError when it has
    none of its own), made current; NCCL's environment set first (`nccl_env`)."""
    if device != "cuda":
        return torch.device("cpu")
    os.environ.update(nccl_env())
    _, _, local_rank, local_size = env_rank()
    dev = torch.device("cuda", devices.gpu_index(local_rank, local_size,
                                                 torch.cuda.device_count()))
    torch.cuda.set_device(dev)
    return dev


def start_rank(result: str | Path, cores_per_rank: int) -> tuple[int, int]:
    """A rank's first step: output to RESULT.rankR.log, pinned; returns (rank, size)."""
    rank, size, _, _ = env_rank()
    quiet(f"{result}.rank{rank}.log")
    pin_rank(cores_per_rank)
    return rank, size


class StepClock:
    """Wall and process CPU time between consecutive `tick()`s (one tick per step start)."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def tick(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def deltas(self, skip: int) -> tuple[list[float], list[float]]:
        pairs = list(zip(self.marks, self.marks[1:]))[skip:]
        return [b[0] - a[0] for a, b in pairs], [b[1] - a[1] for a, b in pairs]
