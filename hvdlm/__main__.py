"""hvdlm's commands behind one name: `hvdlm COMMAND [ARGS...]`, as `git COMMAND`.

    hvdlm train --data data/ --out runs/a   # = hvdlm-train ... = python -m hvdlm.train ...
    hvdlm                                   # the commands (their list: hvdlm/commands.py)
    hvdlm --version                         # hvdlm, torch, Horovod and its patch-set hash
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

import hvdlm
from hvdlm import cli
from hvdlm.commands import COMMANDS, listing
from hvdlm.errors import UsageError
from hvdlm.versions import horovod_build, version

PROG = "hvdlm"


def version_lines() -> list[str]:
    horovod = version("horovod")
    build = horovod_build()
    if not horovod:
        how = " (make install PYTHON=this python)"
    elif build:  # the key ends with the hash of the patch set and the build flags
        how = f" (patch-set hash {build.rsplit('-', 1)[-1]}; build {build})"
    else:
        how = " (not built by scripts/install_horovod.sh: unpatched?)"
    return [f"hvdlm {hvdlm.__version__}", f"torch {version('torch') or 'not installed'}",
            f"horovod {horovod or 'not installed'}{how}"]


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog=PROG, usage="hvdlm [--version] COMMAND [ARGS...]",
        description=__doc__.split("\n")[0].replace("`", ""),
        epilog=f"commands (also hvdlm-NAME, python -m hvdlm.NAME; --help on each):\n{listing('  ')}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the versions and exit")
    return parser


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:  # the rest of the line is the command's own
        return importlib.import_module(COMMANDS[argv[0]].module).main(argv[1:])
    if argv and not argv[0].startswith("-"):
        raise UsageError(f"{argv[0]!r} is not an hvdlm command (hvdlm --help lists them)")
    parser = build_parser()
    if parser.parse_args(argv).version:
        print("\n".join(version_lines()))
    else:
        parser.print_help()
    return 0


main = cli.entry_point(_main, PROG)

if __name__ == "__main__":
    sys.exit(main())
