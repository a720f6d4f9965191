"""Train a GPT or RNN language model with Horovod data parallelism.

    python -m hvdlm.train --data DATA --out RUN [--config FILE.toml] [section.key=value ...]
    python -m hvdlm.train --print-config --config configs/gpt2-124m.toml [--ranks 16]
    horovodrun -np 4 -H localhost:4 --gloo python -m hvdlm.train --data DATA --out RUN
    sbatch slurm/train.sbatch            (srun + python -m hvdlm.launch, see docs/cluster.md)

`--resume auto` (default) continues from RUN's newest sound checkpoint, with RUN/config.toml
as the base config (then --config, then overrides): continuing for more steps is

    python -m hvdlm.train --data DATA --out RUN train.max_steps=400

and each setting that differs from the checkpoint's is a warning saying what it changes (the
model's shape cannot change). --out must not be a dataset folder. SIGTERM or SIGUSR1:
all ranks checkpoint at one step boundary and exit 75 (EXIT_STOPPED) for Slurm to requeue.
The loop is hvdlm/training/trainer.py.
"""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from hvdlm import cli, folders
from hvdlm.config import Config, for_world_size, load_config, to_toml
from hvdlm.errors import UsageError
from hvdlm.text.shards import load_manifest
from hvdlm.training import estimate

GPT2_VOCAB = 50257


def _main(argv: Sequence[str] | None) -> int:
    parser = cli.ArgumentParser(prog="hvdlm.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="dataset folder (manifest.json); required to train")
    parser.add_argument("--out", help="run folder; required to train")
    parser.add_argument("--config", help="TOML file with [model] and [train] tables")
    parser.add_argument("--resume", default="auto",
                        help="auto: continue from the newest checkpoint of --out, if any, "
                             "with RUN/config.toml as the base config | never | PATH")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config, parameter count and memory per rank, "
                             "then exit (no Horovod; --data, if given, sets the vocabulary)")
    parser.add_argument("--ranks", type=int, default=1,
                        help="with --print-config: the world size to resolve for (default 1)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value")
    args = parser.parse_args(argv)
    if args.out is not None:  # before anything is read or written
        folders.refuse(Path(args.out), "--out", folders.DATASET,
                       "hvdlm.train writes a run folder of its own")
    cfg = load_config(args.config, args.overrides, base=run_config(args.out, args.resume))
    if args.print_config:
        print(resolved(cfg, args.data, args.ranks))
        return 0
    for option in ("data", "out"):
        if getattr(args, option) is None:
            parser.error(f"the following arguments are required: --{option}")
    from hvdlm.training.trainer import train  # here: a missing Horovod is one line (cli.run)
    return train(cfg, args.data, args.out, args.resume, callbacks=injected_faults())


def run_config(out: str | None, resume: str) -> Path | None:
    """RUN/config.toml when `--resume auto` will continue RUN from a checkpoint: the run's own
    settings are the base, so a resume needs only what changes."""
    if out is None or resume != "auto" or not (Path(out) / "config.toml").is_file():
        return None
    from hvdlm.training.checkpoint import list_checkpoints  # torch: not for --help
    return Path(out) / "config.toml" if list_checkpoints(out) else None


def injected_faults() -> list:
    """hvdlm's own tests inject faults through HVDLM_FAULT_* (hvdlm/training/faults.py); a run
    that sets none never loads that module."""
    if not any(name.startswith("HVDLM_FAULT_") for name in os.environ):
        return []
    from hvdlm.training import faults
    return faults.from_environ()


def resolved(cfg: Config, data_dir: str | None, ranks: int) -> str:
    """The TOML hvdlm.train would run with on `ranks` ranks, and what it costs."""
    if ranks < 1:
        raise UsageError("--ranks must be >= 1")
    if data_dir is not None:
        vocab, source = load_manifest(data_dir).vocab_size, f"from {data_dir}"
    elif cfg.model.vocab_size > 0:
        vocab, source = cfg.model.vocab_size, "from model.vocab_size"
    else:
        vocab, source = GPT2_VOCAB, "GPT-2's, assumed: give --data for the dataset's"
    cfg = for_world_size(replace(cfg, model=replace(cfg.model, vocab_size=vocab)), ranks)
    return to_toml(cfg, comments=True) + estimate.describe(cfg, ranks, source)


main = cli.entry_point(_main, "hvdlm.train")

if __name__ == "__main__":
    sys.exit(main())
