"""`python -m MODULE ARGS` for the tests without paying Python's and torch's start-up each time.

A server process imports torch and hvdlm once, then forks a child per request; the child sets
the request's environment, folder and argv, runs the module as `__main__` (runpy, as `-m`
does), runs the atexit handlers and exits with the module's status. Each command is still its
own process with its own exit status, stdout and stderr; only the imports are shared. The
server never runs a tensor operation, so no thread pool exists to be copied by fork.

What a fresh interpreter would do differently: environment variables read at import time
(e.g. OMP_NUM_THREADS, PYTHONPATH) are the server's. tests/test_cli_help.py therefore starts
every command in a fresh interpreter too (`run_module(..., fresh=True)`).
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = r'''
import atexit, json, os, runpy, sys, tempfile, traceback
import numpy, h5py, tokenizers, torch, horovod.torch  # the slow imports, once
import hvdlm.cli, hvdlm.config, hvdlm.models, hvdlm.text.pipeline, hvdlm.training.checkpoint

def child(req):
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    tempfile.tempdir = None  # TMPDIR as the request has it
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, req["stdout"], os.O_WRONLY | os.O_TRUNC),
                            (2, req["stderr"], os.O_WRONLY | os.O_TRUNC)):
        new = os.open(path, flags)
        os.dup2(new, fd)
        os.close(new)
    sys.argv = [req["module"], *req["args"]]
    code = 0
    try:
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)

reply = os.fdopen(int(sys.argv[1]), "w", buffering=1)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        reply.close()
        child(req)
    reply.write(json.dumps({"pid": pid}) + "\n")
    _, status = os.waitpid(pid, 0)
    reply.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
'''


# Read when an interpreter or torch starts: a request that changes one needs a fresh process.
STARTUP_PREFIXES = ("PYTHON", "OMP_", "MKL_", "LD_", "TORCH_", "CUDA_", "KMP_")


def startup_env(env: dict) -> dict:
    return {k: v for k, v in env.items()
            if k.startswith(STARTUP_PREFIXES) and k != "PYTHONUNBUFFERED"}


class ForkServer:
    """One server per test process, started on first use."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._replies = None
        self._startup: dict = {}

    def serves(self, env: dict) -> bool:
        """Whether a child of the server starts as a fresh interpreter with `env` would."""
        return self._proc is None or startup_env(env) == self._startup

    def _start(self, root: Path, env: dict) -> None:
        read_fd, write_fd = os.pipe()
        self._startup = startup_env(env)
        self._proc = subprocess.Popen([sys.executable, "-c", SERVER, str(write_fd)],
                                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      text=True, cwd=root, env=env, pass_fds=(write_fd,))
        os.close(write_fd)
        self._replies = os.fdopen(read_fd, "r")

    def _reply(self, deadline: float) -> dict | None:
        remaining = max(deadline - time.monotonic(), 0)
        ready, _, _ = select.select([self._replies], [], [], remaining)
        if not ready:
            return None
        line = self._replies.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return json.loads(line)

    def run(self, module: str, args: list[str], env: dict, cwd: Path, timeout: float,
            root: Path) -> subprocess.CompletedProcess:
        if self._proc is None or self._proc.poll() is not None:
            self._start(root, env)
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            out.touch()
            err.touch()
            request = {"module": module, "args": args, "env": env, "cwd": str(cwd),
                       "stdout": str(out), "stderr": str(err)}
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            deadline = time.monotonic() + timeout
            pid = self._reply(deadline + 60)["pid"]
            done = self._reply(deadline)
            if done is None:
                os.kill(pid, signal.SIGKILL)
                self._reply(time.monotonic() + 60)
                raise subprocess.TimeoutExpired([module, *args], timeout,
                                                out.read_text(), err.read_text())
            return subprocess.CompletedProcess([sys.executable, "-m", module, *args],
                                               done["status"], out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))


FORK_SERVER = ForkServer()
