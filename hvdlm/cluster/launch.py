"""Start Horovod (Gloo) ranks without MPI, ssh or horovodrun: under srun, submitit, or on hosts.

Under Slurm every task runs this launcher; it reads its place in the job from the SLURM_*
variables (or submitit's local SUBMITIT_LOCAL_* ones), rank 0's task starts Horovod's
rendezvous server and publishes its address, and each task runs CMD as one rank:

    srun --ntasks-per-node=2 python -m hvdlm.launch -- python -m hvdlm.train --data D --out R

(`--rendezvous-dir DIR`: a folder every node sees, when ~/.hvdlm/rendezvous is not; `--iface`:
the interface rank 0 serves on, when node names resolve to loopback.)

On one machine, `--hosts` starts one rank per slot itself; with `--netns` each host's ranks run
inside the network namespace of that name (see tests/infra/emulate-cluster.sh):

    python -m hvdlm.launch --hosts node01:2,node02:1 --netns -- python train.py

The same plan (`hostlist.assign_slots`, Horovod's own) serves both. From Python, benchmarks call
`run_on_hosts([("node01", 1), ("node02", 1)], cmd, netns=True)`.
"""
from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from hvdlm import cli
from hvdlm.cluster.hostlist import (Hosts, Slot, Task, assign_slots, find_slot, horovod_env,
                                    hosts_string, parse_hosts, task_from_environ)
from hvdlm.cluster.children import describe_status, exit_status, split_command
from hvdlm.cluster.rendezvous import (SECRET_ENV, JobRendezvous, iface_towards, ipv4_of, new_secret,
                                      publish, resolve_ipv4, secure_dir, source_address, wait_for)
from hvdlm.cluster.requeue import END_SIGNAL, REQUEUE_SIGNAL
from hvdlm.errors import EXIT_TIMEOUT, HvdlmError, UsageError

FORWARDED_SIGNALS = (END_SIGNAL, REQUEUE_SIGNAL, signal.SIGINT)  # the stop protocol's
KILL_GRACE_S = 5.0


def rendezvous_dir(env: Mapping[str, str], given: str | Path | None = None) -> Path:
    """A folder every node sees: --rendezvous-dir, else $HVDLM_RENDEZVOUS_DIR (the form
    documented before the flag, and what `sbatch --export` hands over), else
    ~/.hvdlm/rendezvous."""
    return Path(given or env.get("HVDLM_RENDEZVOUS_DIR") or Path.home() / ".hvdlm" / "rendezvous")


def rendezvous_file(task: Task, env: Mapping[str, str], folder: str | Path | None = None) -> Path:
    """CLUSTER.JOBID.STEP.RESTART in the rendezvous folder: two clusters sharing $HOME (same
    job ids) do not collide. CLUSTER is $SLURM_CLUSTER_NAME, else 'local'."""
    cluster = re.sub(r"[^A-Za-z0-9_.-]", "_", env.get("SLURM_CLUSTER_NAME") or "local")
    return rendezvous_dir(env, folder) / f"{cluster}.{task.job_key}"


def rendezvous_address(task: Task, env: Mapping[str, str], iface: str | None = None) -> str:
    """The address of rank 0's node that the other nodes reach, and nothing wider.

    iface: --iface, else $HVDLM_IFACE (the form documented before the flag)."""
    iface = iface or env.get("HVDLM_IFACE")
    if iface:
        addr = ipv4_of(iface)
        if addr is None:
            raise UsageError(f"interface {iface} (--iface) has no IPv4 address here")
        return addr
    if len(task.hosts) == 1:
        return "127.0.0.1"  # every rank is on this node
    # The address this node uses towards another node is the one that node can answer.
    for host, _ in task.hosts:
        peer = resolve_ipv4(host) if host != task.host else None
        if peer and not peer.startswith("127."):
            return source_address(peer)
    own = resolve_ipv4(task.host)
    if own and not own.startswith("127."):
        return own
    raise HvdlmError("cannot tell which address other nodes reach this node at (node names "
                     "resolve to loopback); give --iface, the interface the job uses")


@contextlib.contextmanager
def _forwarding(pids: Sequence[int]) -> Iterator[None]:
    """While inside, SIGTERM/SIGUSR1/SIGINT sent to us go to each child's process group."""
    def forward(signum, _frame):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signum)
    previous = {s: signal.signal(s, forward) for s in FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _popen(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen:
    # Own session: a terminal's Ctrl-C reaches the child once (forwarded), not twice.
    try:
        return subprocess.Popen(list(argv), env=dict(env), start_new_session=True)
    except FileNotFoundError:
        raise UsageError(f"command not found: {argv[0]}") from None


def run_child(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run argv (no shell), forward signals to it, return its exit status."""
    child = _popen(argv, env)
    with _forwarding([child.pid]):
        return exit_status(child.wait())


def run_task(cmd: Sequence[str], timeout_s: float, env: Mapping[str, str] = os.environ,
             folder: str | Path | None = None, iface: str | None = None) -> int:
    """Srun/submitit mode: become one Horovod rank of the job; rank 0 also serves rendezvous.

    folder: the rendezvous folder (--rendezvous-dir); iface: rank 0's interface (--iface)."""
    task = task_from_environ(env)
    slot = replace(find_slot(assign_slots(task.hosts), task.host, task.local_rank), rank=task.rank)
    path = rendezvous_file(task, env, folder)
    server = None
    if task.rank == 0:
        secure_dir(path.parent)  # refused before anything listens
        # The secret reaches the other tasks only through the 0600 file in our 0700 folder.
        secret = new_secret()
        server = JobRendezvous(rendezvous_address(task, env, iface), task.hosts, secret)
        addr, port = server.addr, server.port
    else:
        addr, port, secret = wait_for(path, timeout_s)
    try:
        if server is not None:
            publish(path, addr, port, secret)  # only once the server listens: hvd.init() finds it
        gloo_timeout = int(env.get("HOROVOD_GLOO_TIMEOUT_SECONDS") or timeout_s)
        rank_env = {**env, **horovod_env(slot, addr, port, iface_towards(addr), gloo_timeout,
                                         secret)}
        return run_child(cmd, rank_env)
    finally:
        if server is not None:
            server.close()
            path.unlink(missing_ok=True)


def _netns_iface(netns: str, addr: str) -> str:
    """The interface inside namespace `netns` that its traffic to `addr` leaves from."""
    def ip(*args: str) -> str:
        return subprocess.run(["ip", "-n", netns, "-o", "-4", *args], capture_output=True,
                              text=True, check=True, timeout=10).stdout
    route = ip("route", "get", addr).split()
    src = route[route.index("src") + 1]  # for its own address the route is via lo; src is not
    for line in ip("addr", "show").splitlines():
        fields = line.split()
        if f" {src}/" in line and len(fields) > 1:
            return fields[1]
    raise HvdlmError(f"no interface in namespace {netns} holds {src}")


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    """First stdout line of proc, or HvdlmError at the deadline or if it exits first."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if sel.select(timeout_s):
            line = proc.stdout.readline().strip()
            if line:
                return line
    raise HvdlmError(f"the rendezvous server did not start within {timeout_s:g} s "
                     f"(exit status {proc.poll()})")


@contextlib.contextmanager
def _rendezvous_on(hosts: Hosts, netns: bool, timeout_s: float,
                   secret: str) -> Iterator[tuple[str, int]]:
    """A rendezvous server for `hosts`: in the first host's namespace, or here on loopback."""
    if not netns:
        server = JobRendezvous("127.0.0.1", hosts, secret)
        try:
            yield server.addr, server.port
        finally:
            server.close()
        return
    first = hosts[0][0]
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, SECRET_ENV: secret, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    helper = subprocess.Popen(
        ["ip", "netns", "exec", first, sys.executable, "-m", "hvdlm.cluster.rendezvous",
         "--bind-host", first, "--hosts", hosts_string(hosts)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        addr, port = _read_line(helper, timeout_s).split()
        yield addr, int(port)
    finally:
        helper.stdin.close()  # the helper serves until its stdin closes
        try:
            helper.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()


def _check_netns(hosts: Hosts) -> None:
    if os.geteuid() != 0:
        raise UsageError("--netns needs root (ip netns exec)")
    missing = [h for h, _ in hosts if not Path("/run/netns", h).exists()]
    if missing:
        raise UsageError(f"no network namespace for {', '.join(missing)}: start the emulated "
                         f"cluster first (tests/infra/emulate-cluster.sh up {len(hosts)})")


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    """SIGTERM every still-running rank's process group, SIGKILL after a grace period."""
    live = [p for p in procs if p.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in live):
            time.sleep(0.05)
        live = [p for p in live if p.poll() is None]
        if not live:
            return


def _describe(slot: Slot, returncode: int) -> str:
    return f"rank {slot.rank} ({slot.hostname}) {describe_status(exit_status(returncode))}"


def _supervise(procs: Sequence[subprocess.Popen], slots: Sequence[Slot],
               job_timeout_s: float | None) -> int:
    """Wait for every rank; on the first failure (or the deadline) stop the rest."""
    deadline = None if job_timeout_s is None else time.monotonic() + job_timeout_s
    while True:
        codes = [p.poll() for p in procs]
        failed = [(s, c) for s, c in zip(slots, codes) if c not in (None, 0)]
        if failed:
            slot, code = failed[0]
            _stop(procs)
            others = sum(1 for c in codes if c is None)
            print(f"hvdlm.launch: error: {_describe(slot, code)}; stopped {others} other "
                  f"rank(s)", file=sys.stderr, flush=True)
            return exit_status(code) or 1
        if all(c == 0 for c in codes):
            return 0
        if deadline is not None and time.monotonic() > deadline:
            _stop(procs)
            print(f"hvdlm.launch: error: job timed out after {job_timeout_s:g} s; stopped all "
                  f"ranks", file=sys.stderr, flush=True)
            return EXIT_TIMEOUT
        time.sleep(0.05)


def run_on_hosts(hosts: Sequence[tuple[str, int]], cmd: Sequence[str], netns: bool = False,
                 env: Mapping[str, str] | None = None, timeout: float | None = None,
                 startup_timeout: float = 60.0) -> int:
    """Run `cmd` as one Horovod rank per slot of `hosts` on this machine; return the job's status.

    netns: run each host's ranks inside the network namespace named after the host.
    env: extra variables for every rank. timeout: whole-job deadline in seconds (124 when hit).
    0 when every rank exits 0; otherwise the first failing rank is named on stderr, the others
    are stopped, and its exit status (or 1) is returned.
    """
    hosts = [(h, int(n)) for h, n in hosts]
    slots = assign_slots(hosts)
    if netns:
        _check_netns(hosts)
    base = {**os.environ, **(env or {})}
    gloo_timeout = int(base.get("HOROVOD_GLOO_TIMEOUT_SECONDS") or startup_timeout)
    secret = new_secret()  # one per job, only in the ranks' (and the server's) environment
    with _rendezvous_on(hosts, netns, startup_timeout, secret) as (addr, port):
        ifaces = {h: _netns_iface(h, addr) if netns else iface_towards(addr) for h, _ in hosts}
        procs: list[subprocess.Popen] = []
        try:
            for slot in slots:
                rank_env = {**base, **horovod_env(slot, addr, port, ifaces[slot.hostname],
                                                  gloo_timeout, secret)}
                argv = ["ip", "netns", "exec", slot.hostname, *cmd] if netns else list(cmd)
                procs.append(_popen(argv, rank_env))
            with _forwarding([p.pid for p in procs]):
                return _supervise(procs, slots, timeout)
        finally:
            _stop(procs)


def _main(argv: Sequence[str] | None) -> int:
    opts, cmd = split_command(sys.argv[1:] if argv is None else argv)
    p = cli.ArgumentParser(prog="hvdlm.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the rendezvous and for hvd.init() (default 120)")
    p.add_argument("--hosts", help="start ranks here: HOST:SLOTS,... (one rank per slot)")
    p.add_argument("--netns", action="store_true",
                   help="with --hosts: run each host's ranks in the network namespace HOST")
    p.add_argument("--job-timeout", type=float, default=None,
                   help="with --hosts: stop every rank after this many seconds (exit 124)")
    p.add_argument("--rendezvous-dir", metavar="DIR",
                   help="under srun/submitit: a folder every node sees, for rank 0's address "
                        "(default $HVDLM_RENDEZVOUS_DIR, else ~/.hvdlm/rendezvous)")
    p.add_argument("--iface", help="under srun/submitit: the interface rank 0 serves the "
                                   "rendezvous on, e.g. ib0 (default $HVDLM_IFACE, else found)")
    args = p.parse_args(opts)
    if not cmd:
        raise UsageError("give the command after --, e.g. python -m hvdlm.launch -- python x.py")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.hosts is None:
        if args.netns or args.job_timeout is not None:
            raise UsageError("--netns and --job-timeout need --hosts")
        return run_task(cmd, args.timeout, folder=args.rendezvous_dir, iface=args.iface)
    if args.rendezvous_dir or args.iface:
        raise UsageError("--rendezvous-dir and --iface are for srun/submitit tasks, not --hosts")
    return run_on_hosts(parse_hosts(args.hosts), cmd, netns=args.netns,
                        timeout=args.job_timeout, startup_timeout=args.timeout)


main = cli.entry_point(_main, "hvdlm.launch")

