"""Shared command-line plumbing: one-line errors and their exit codes, no traceback."""
from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import time
from typing import Callable, Mapping, Sequence

from hvdlm.errors import EXIT_INTERRUPTED, EXIT_USAGE, HvdlmError, UsageError


def shows_default(action: argparse.Action) -> bool:
    """Whether --help should name this option's default: it has one worth naming (not None,
    False, an empty list or a flag's), and its help does not already say it."""
    default = action.default
    if default is None or default is False or default == [] or default is argparse.SUPPRESS:
        return False
    if not action.option_strings and action.nargs not in ("?", "*"):
        return False  # a required positional
    if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
        return False
    return "default" not in (action.help or "").lower() and action.help != argparse.SUPPRESS


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every command's --help: each option's default after its help, `(default: X)`."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and shows_default(action):  # argparse prints no line without help
            action = copy.copy(action)
            action.help = "default: %(default)s"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = (action.help or "").strip()
        if shows_default(action):
            text = f"{text} (default: %(default)s)" if text else "default: %(default)s"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`prog: error: ...`) and exit status 2, and
    --help names every option's default (DefaultsHelpFormatter)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        wait_for_rank_zero()
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USAGE)


def add_device_option(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=default,
                        help=f"where the model runs (default {default}; auto: cuda if available)")


def pick_device(name: str):
    """The torch.device that --device names; a one-line error for cuda where there is none."""
    import torch  # here, not at the top: --help stays fast

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here")
    return torch.device(name)


RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
QUIET_SECONDS = 3.0


def launched_rank(env: Mapping[str, str] = os.environ) -> int:
    """This process's rank as its launcher (horovodrun, hvdlm.launch, mpirun) set it; 0 if none
    did. Read from the environment, before Horovod starts."""
    for name in RANK_VARIABLES:
        if env.get(name):
            try:
                return int(env[name])
            except ValueError:
                return 0
    return 0


def wait_for_rank_zero(seconds: float = QUIET_SECONDS) -> None:
    """Before a rank other than 0 reports its error: wait, so that when every rank fails alike
    (a wrong option, path or key) only rank 0's line is printed. Rank 0 exits at once, and the
    launchers (horovodrun, hvdlm.launch, srun --kill-on-bad-exit) end the other ranks on the
    first failure, before they speak; a rank that failed alone still prints, `seconds` later.
    The wait ends on SIGTERM (as the launchers send), whatever handler training installed."""
    if launched_rank() == 0:
        return
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    time.sleep(seconds)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
        prog: str = "hvdlm") -> int:
    """Call `main(argv)`; report an HvdlmError as one line on stderr and return its exit code."""
    try:
        return main(argv) or 0
    except HvdlmError as err:
        wait_for_rank_zero()
        sys.stderr.write(f"{prog}: error: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED


def entry_point(body: Callable[[Sequence[str] | None], int | None],
                prog: str) -> Callable[[Sequence[str] | None], int]:
    """A command's `main(argv=None)`: `body` under `run`, named `prog` in its error lines.

        main = cli.entry_point(_main, PROG)   # hvdlm-NAME, hvdlm NAME and python -m run it

        if __name__ == "__main__":
            sys.exit(main())
    """
    def main(argv: Sequence[str] | None = None) -> int:
        return run(body, argv, prog)

    main.__doc__ = f"Run `{prog}` with `argv` (default sys.argv[1:]); return its exit status."
    return main
