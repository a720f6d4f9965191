"""Child processes of the launchers: the command after `--`, and exit statuses as a shell
reports them (hvdlm.launch and hvdlm.submit share these)."""
from __future__ import annotations

import contextlib
import signal
from typing import Sequence


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(our options, the command after `--`); without `--` everything is ours, so --help and
    option errors still come first."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def exit_status(returncode: int) -> int:
    """A child killed by signal N (Popen's -N) becomes 128+N, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def describe_status(status: int) -> str:
    """'exited with code 3' or 'was killed by SIGKILL', from a shell-style status."""
    if status > 128:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(status - 128).name}"
    return f"exited with code {status}"
