"""Train a GPT or RNN language model with Horovod data parallelism.

    python -m hvdlm.train --data DATA --out RUN [--config FILE.toml] [section.key=value ...]
    horovodrun -np 4 -H localhost:4 --gloo python -m hvdlm.train --data DATA --out RUN
    sbatch slurm/train.sbatch            (srun + python -m hvdlm.launch, see README)

`--resume auto` (default) continues from RUN's newest sound checkpoint. SIGTERM or SIGUSR1:
all ranks checkpoint at one step boundary and exit 75 (EXIT_STOPPED) for Slurm to requeue.
The loop is hvdlm/training/trainer.py.
"""
from __future__ import annotations

import sys
from typing import Sequence

from hvdlm import cli
from hvdlm.config import load_config
from hvdlm.training import faults


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(prog="hvdlm.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder (manifest.json)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--config", help="TOML file with [model] and [train] tables")
    parser.add_argument("--resume", default="auto",
                        help="auto (newest checkpoint of --out, if any) | never | PATH")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    from hvdlm.training.trainer import train  # here: a missing Horovod is one line (cli.run)
    return train(cfg, args.data, args.out, args.resume, callbacks=faults.from_environ())


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(_main, argv, prog="hvdlm.train")


if __name__ == "__main__":
    sys.exit(main())
