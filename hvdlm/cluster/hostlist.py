"""Host lists, Slurm/submitit task variables, and the one rank plan they and `--hosts` share.

Slurm describes an allocation as a compressed node list (`node[01-04,07]`) and a task count
per node (`2(x3),1`); `hvdlm.launch --hosts node01:2,node02:1` gives the same thing by hand.
Both become a list of (host, slots), and `assign_slots` turns that list into one `Slot` per
rank (rank, local and cross ranks and sizes) with Horovod's own `get_host_assignments`: the
launcher and the rendezvous server (rendezvous.py) compute the plan with the same code, so
our ranks agree with the scope sizes the server expects. What Horovod lacks stays here: Slurm's
node-list and task-count syntax, and `parse_hosts`, which reads `--hosts` with one-line errors
and bare names as one slot. `horovod_env` then writes a slot as the HOROVOD_* variables a Gloo
rank reads.

    >>> expand_nodelist("n[01-03]")
    ['n01', 'n02', 'n03']
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Mapping, Sequence

from horovod.runner.common.util.hosts import HostInfo, SlotInfo, get_host_assignments

from hvdlm.errors import UsageError

Hosts = list[tuple[str, int]]  # (host name, slots), in rank order

_HOST_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # what Horovod's own host parser accepts

Slot = SlotInfo  # one rank's place in the job: hostname, rank, local/cross rank, the sizes


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: `a[1,2],b` -> ['a[1,2]', 'b']."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise UsageError(f"bad node list {text!r}: unmatched ']'")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise UsageError(f"bad node list {text!r}: unmatched '['")
    parts.append(text[start:])
    return parts


def _expand_range(item: str, whole: str) -> list[str]:
    """`01-04` -> ['01', '02', '03', '04'] (zero padding kept), `7` -> ['7']."""
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
    if not m:
        raise UsageError(f"bad node list {whole!r}: {item!r} is not N or N-M")
    lo, hi = m.group(1), m.group(2) or m.group(1)
    if int(hi) < int(lo):
        raise UsageError(f"bad node list {whole!r}: range {item!r} runs backwards")
    width = len(lo) if lo.startswith("0") else 0  # Slurm pads only when the start is padded
    return [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]


def _expand_one(name: str, whole: str) -> list[str]:
    """Expand every bracket group of one name: `r[1-2]-n[1-2]` -> r1-n1, r1-n2, r2-n1, r2-n2."""
    open_at = name.find("[")
    if open_at < 0:
        return [name]
    close_at = name.find("]", open_at)
    prefix, body, rest = name[:open_at], name[open_at + 1:close_at], name[close_at + 1:]
    numbers = [n for part in body.split(",") for n in _expand_range(part, whole)]
    tails = _expand_one(rest, whole)
    return [prefix + n + tail for n in numbers for tail in tails]


def expand_nodelist(nodelist: str) -> list[str]:
    """Slurm's compressed node list -> host names, in Slurm's order.

    `node[01-04,07]` -> node01..node04, node07; `a[1-2],b3` -> a1, a2, b3;
    `gpu-[001-003]-x` -> gpu-001-x, gpu-002-x, gpu-003-x.
    """
    names = []
    for part in _split_top_level(nodelist.strip()):
        if not part:
            raise UsageError(f"bad node list {nodelist!r}: empty entry")
        names.extend(_expand_one(part, nodelist))
    for name in names:
        if not _HOST_NAME.match(name):
            raise UsageError(f"bad node list {nodelist!r}: {name!r} is not a host name")
    return names


def expand_tasks_per_node(spec: str) -> list[int]:
    """Slurm's SLURM_TASKS_PER_NODE -> one count per node: `2(x3),1` -> [2, 2, 2, 1]."""
    counts = []
    for part in spec.strip().split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            raise UsageError(f"bad tasks-per-node value {spec!r}: {part!r} is not N or N(xK)")
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts


def parse_hosts(spec: str) -> Hosts:
    """`node01:2,node02:1` -> [('node01', 2), ('node02', 1)]; a bare name means 1 slot."""
    hosts: Hosts = []
    for part in spec.split(","):
        name, _, slots = part.strip().partition(":")
        if not _HOST_NAME.match(name) or (slots and not slots.isdigit()):
            raise UsageError(f"bad --hosts entry {part!r}: expected HOST or HOST:SLOTS")
        hosts.append((name, int(slots or 1)))
    check_hosts(hosts)
    return hosts


def check_hosts(hosts: Sequence[tuple[str, int]]) -> None:
    """Refuse an empty plan, duplicate hosts or a host with no slots (one line each)."""
    if not hosts:
        raise UsageError("no hosts given")
    names = [h for h, _ in hosts]
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise UsageError(f"host listed twice: {', '.join(dupes)} (give HOST:SLOTS once)")
    empty = [h for h, n in hosts if n < 1]
    if empty:
        raise UsageError(f"host with no slots: {', '.join(empty)}")


def hosts_string(hosts: Sequence[tuple[str, int]]) -> str:
    """The `host:slots,...` form Horovod's `parse_hosts` reads."""
    return ",".join(f"{h}:{n}" for h, n in hosts)


def assign_slots(hosts: Sequence[tuple[str, int]]) -> list[Slot]:
    """One Slot per rank, by Horovod's `get_host_assignments`: ranks fill each host in turn
    (block order, like srun's default).

    The cross communicator of local rank L holds the hosts that have more than L slots, so with
    uneven hosts (`2(x3),1`) local rank 1 has a smaller cross size than local rank 0.
    """
    check_hosts(hosts)
    return get_host_assignments([HostInfo(h, n) for h, n in hosts], sum(n for _, n in hosts))


def find_slot(slots: Sequence[Slot], host: str, local_rank: int) -> Slot:
    """The slot of local rank `local_rank` on `host`."""
    for slot in slots:
        if slot.hostname == host and slot.local_rank == local_rank:
            return slot
    raise UsageError(f"no slot for local rank {local_rank} on host {host!r} in this job's plan")


def horovod_env(slot: Slot, rendezvous_addr: str, rendezvous_port: int, iface: str,
                gloo_timeout_s: int, secret: str | None = None) -> dict[str, str]:
    """The variables that make `hvd.init()` join this job as `slot`, over Gloo, without MPI.

    secret: the job's rendezvous secret, which the patched Horovod sends with every request.
    """
    secret_env = {"HOROVOD_GLOO_RENDEZVOUS_SECRET": secret} if secret else {}
    return {**secret_env,
        "HOROVOD_RANK": str(slot.rank),
        "HOROVOD_SIZE": str(slot.size),
        "HOROVOD_LOCAL_RANK": str(slot.local_rank),
        "HOROVOD_LOCAL_SIZE": str(slot.local_size),
        "HOROVOD_CROSS_RANK": str(slot.cross_rank),
        "HOROVOD_CROSS_SIZE": str(slot.cross_size),
        "HOROVOD_HOSTNAME": slot.hostname,
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": rendezvous_addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(rendezvous_port),
        "HOROVOD_GLOO_IFACE": iface,
        "HOROVOD_GLOO_TIMEOUT_SECONDS": str(gloo_timeout_s),
    }


@dataclass(frozen=True)
class Task:
    """This process's place in a Slurm or submitit job."""

    rank: int
    local_rank: int
    host: str          # this task's node, as named in `hosts`
    hosts: Hosts       # every node of the step and its task count, in node order
    job_key: str       # unique per job step and restart: names the rendezvous file


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise UsageError(f"{name} is missing or not a number ({env.get(name)!r})") from None


def _slurm_task(env: Mapping[str, str]) -> Task:
    # A step may use part of the allocation: its own variables win over the job's.
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise UsageError("SLURM_STEP_NODELIST and SLURM_JOB_NODELIST are empty")
    nodes = expand_nodelist(nodelist)
    per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    counts = expand_tasks_per_node(per_node) if per_node else [1] * len(nodes)
    if len(counts) != len(nodes):
        raise UsageError(f"{len(nodes)} nodes but {len(counts)} task counts ({per_node!r})")
    size = _int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
    if sum(counts) != size:
        raise UsageError(f"tasks per node {per_node!r} add up to {sum(counts)}, not {size} tasks")
    # slurmd's own node name is exact; SLURM_NODEID is the fallback.
    name = env.get("SLURMD_NODENAME")
    node_id = nodes.index(name) if name in nodes else _int(env, "SLURM_NODEID")
    if not 0 <= node_id < len(nodes):
        raise UsageError(f"SLURM_NODEID {node_id} is outside the node list {nodes}")
    step = env.get("SLURM_STEP_ID") or env.get("SLURM_STEPID") or "0"
    key = f"{env.get('SLURM_JOB_ID', 'job')}.{step}.{env.get('SLURM_RESTART_COUNT', '0')}"
    return Task(_int(env, "SLURM_PROCID"), _int(env, "SLURM_LOCALID"), nodes[node_id],
                list(zip(nodes, counts)), key)


def _submitit_local_task(env: Mapping[str, str]) -> Task:
    # submitit's local executor: one node, all tasks on this machine.
    size = _int(env, "SUBMITIT_LOCAL_NTASKS")
    host = socket.gethostname()
    return Task(_int(env, "SUBMITIT_LOCAL_GLOBALID"), _int(env, "SUBMITIT_LOCAL_LOCALID"), host,
                [(host, size)], f"local-{env.get('SUBMITIT_LOCAL_JOB_ID', 'job')}")


def task_from_environ(env: Mapping[str, str]) -> Task:
    """Read this task's place from Slurm's (srun, sbatch+srun, submitit) or submitit-local env."""
    # submitit-local first: run inside an salloc shell it still inherits the outer SLURM_*.
    if "SUBMITIT_LOCAL_GLOBALID" in env:
        return _submitit_local_task(env)
    if "SLURM_PROCID" in env and ("SLURM_STEP_NODELIST" in env or "SLURM_JOB_NODELIST" in env):
        return _slurm_task(env)
    raise UsageError("no Slurm task found (SLURM_PROCID, SLURM_JOB_NODELIST unset): run under "
                     "srun or submitit, or give --hosts HOST:SLOTS,... to start ranks here")
