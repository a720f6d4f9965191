"""What produced a run: versions, the commit, hosts, devices, the Slurm job and its restart.

`describe(world)` is called by every rank at each (re)start (the hostnames travel as tensors);
rank 0 appends the result to RUN/env.json (hvdlm/training/record/files.py).
"""
from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import torch

import hvdlm
from hvdlm.cluster import distributed
from hvdlm.versions import horovod_build, version

HOST_BYTES = 64


def hostnames() -> list[str]:
    """Every rank's hostname, in rank order (only rank 0's list is needed; all must call)."""
    raw = socket.gethostname().encode()[:HOST_BYTES].ljust(HOST_BYTES, b"\0")
    rows = distributed.gather_tensor(torch.frombuffer(bytearray(raw), dtype=torch.uint8),
                                     name="hostnames")
    return [bytes(row.tolist()).rstrip(b"\0").decode(errors="replace") for row in rows]


def git_commit(start: Path = Path(hvdlm.__file__).parent) -> str | None:
    """The commit of the checkout hvdlm runs from (None if installed from a wheel)."""
    for folder in (start, *start.parents):
        head = folder / ".git" / "HEAD"
        if head.is_file():
            ref = head.read_text().strip()
            if not ref.startswith("ref: "):
                return ref  # a detached HEAD names the commit itself
            name = ref[5:]
            loose = folder / ".git" / name
            if loose.is_file():
                return loose.read_text().strip()
            packed = folder / ".git" / "packed-refs"
            for line in packed.read_text().splitlines() if packed.is_file() else []:
                if line.endswith(" " + name):
                    return line.split()[0]
            return None
    return None


def describe(world: distributed.World, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """This start of the run, as env.json records it."""
    devices = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
               if world.device.type == "cuda" else [platform.processor() or platform.machine()])
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hvdlm": hvdlm.__version__, "torch": torch.__version__,
        "horovod": version("horovod"), "horovod_build": horovod_build(),
        "python": platform.python_version(), "commit": git_commit(),
        "hosts": hostnames(), "world_size": world.size, "device": str(world.device),
        "device_names": devices,
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_restart_count": int(env.get("SLURM_RESTART_COUNT") or 0),
    }
