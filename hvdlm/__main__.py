"""`hvdlm --version` (or `python -m hvdlm --version`): hvdlm, torch, Horovod and the build key
of the patched Horovod. Without options: the commands, each also an `hvdlm-NAME` script."""
from __future__ import annotations

import sys
from typing import Sequence

import hvdlm
from hvdlm import cli
from hvdlm.versions import horovod_build, version

COMMANDS = {
    "preprocess": "text files -> tokenizer + sharded HDF5 dataset",
    "verify": "check a dataset's shards against its manifest",
    "train": "train a model (under horovodrun, srun or hvdlm.launch)",
    "evaluate": "perplexity, token accuracy and bits per byte of a run",
    "generate": "continue a prompt with a run's model",
    "export": "a run's GPT as a Hugging Face GPT-2 folder",
    "explain": "an interpretability report of a run's model (one HTML page)",
    "audit": "what a run's model memorised: canaries, extraction, PII in samples",
    "launch": "start one rank per Slurm task or per --hosts slot",
    "submit": "submit a training run with submitit",
}


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


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(prog="hvdlm", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="store_true", help="print the versions and exit")
    args = parser.parse_args(argv)
    if args.version:
        print("\n".join(version_lines()))
        return 0
    width = max(map(len, COMMANDS))
    print("hvdlm commands (python -m hvdlm.NAME or hvdlm-NAME; --help on each):")
    for name, what in COMMANDS.items():
        print(f"  {name:<{width}}  {what}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog="hvdlm")


if __name__ == "__main__":
    sys.exit(main())
