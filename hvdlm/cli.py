"""Shared command-line plumbing: one-line errors and their exit codes, no traceback."""
from __future__ import annotations

import argparse
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
