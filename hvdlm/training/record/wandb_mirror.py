"""Weights & Biases, optional (`pip install 'hvdlm[wandb]'`, `train.wandb_project=NAME`).

Rank 0 only. The W&B run id is kept in RUN/wandb_id.txt, so a resumed or requeued job
continues the same W&B run instead of starting a new one. `train.wandb_mode=offline` writes
under RUN/wandb/ for a later `wandb sync` (compute nodes often have no internet).
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from hvdlm import untrusted
from hvdlm.config import Config
from hvdlm.output import write_atomic
from hvdlm.errors import UsageError

ID_FILE = "wandb_id.txt"


class WandbMirror:
    """Sends each metrics record's numbers to one W&B run, under the same tags as TensorBoard."""

    def __init__(self, run_dir: Path, cfg: Config) -> None:
        try:
            import wandb  # optional: only runs that ask for W&B need it
        except ImportError:
            raise UsageError("train.wandb_project needs wandb: pip install 'hvdlm[wandb]'") \
                from None
        id_file = run_dir / ID_FILE
        run_id = untrusted.read_text(id_file, 256, "W&B id file", follow=False).strip() \
            if id_file.exists() or id_file.is_symlink() else secrets.token_hex(6)
        write_atomic(id_file, (run_id + "\n").encode(), private=True)  # never through a link
        t = cfg.train
        self.run = wandb.init(project=t.wandb_project, name=t.wandb_name or run_dir.name,
                              id=run_id, resume="allow", dir=str(run_dir), mode=t.wandb_mode,
                              config=cfg.to_dict())

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def mirrors(run_dir: Path, cfg: Config) -> list[Any]:
    """The metric mirrors this config asks for besides TensorBoard."""
    if not cfg.train.wandb_project or cfg.train.wandb_mode == "disabled":
        return []
    return [WandbMirror(run_dir, cfg)]
