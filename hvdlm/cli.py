"""Shared command-line plumbing: one-line errors, exit statuses, the `--` split."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from typing import Callable, Sequence

from hvdlm.errors import EXIT_INTERRUPTED, EXIT_USAGE, HvdlmError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`prog: error: ...`) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USAGE)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
        prog: str = "hvdlm") -> int:
    """Call `main(argv)`; report an HvdlmError as one line on stderr and return its exit code."""
    try:
        return main(argv) or 0
    except HvdlmError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED


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
