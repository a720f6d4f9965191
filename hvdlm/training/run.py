"""A trained run, opened once: its config, tokenizer, checkpoint and model, for every command
that reads a run (evaluate, generate, export, explain, audit).

    from hvdlm.training.run import Run
    run = Run.open("runs/demo", checkpoint=None, device="cpu")  # None: the newest sound one
    run.config.model.seq_len, run.tokenizer.eos_id, run.checkpoint, run.step
    logits = run.model(idx)   # built on first use, on `device`, in eval mode

The checkpoint is `checkpoint` (a user's --checkpoint) or the newest sound one of RUN's lineage
(hvdlm/training/checkpoint.py); the config is the one it was trained with; the tokenizer is a
given one, else RUN/tokenizer.json (hvdlm/training/record/files.py), and must be the
checkpoint's. A RUN that is not a folder, a run without a checkpoint and a tokenizer that does
not fit are one-line errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from hvdlm.config import Config
from hvdlm.errors import CheckpointError, DataError
from hvdlm.models import build_model
from hvdlm.text.tokenizer import Tokenizer
from hvdlm.training import checkpoint as checkpoints
from hvdlm.training import stored_config
from hvdlm.training.record.files import run_tokenizer


@dataclass
class Run:
    folder: Path
    config: Config                      # the resolved config the checkpoint was trained with
    tokenizer: Tokenizer
    checkpoint: Path                    # the checkpoint file opened
    state: checkpoints.TrainingState
    device: torch.device
    _model: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def model(self) -> torch.nn.Module:
        """The checkpoint's model on `device`, in eval mode (built once, when first asked)."""
        if self._model is None:
            model = build_model(self.config.model)
            model.load_state_dict(self.state.model)
            self._model = model.to(self.device).eval()
        return self._model

    @classmethod
    def open(cls, folder: str | Path, checkpoint: str | Path | None = None,
             device: torch.device | str = "cpu",
             tokenizer: Tokenizer | str | Path | None = None) -> "Run":
        """Open RUN `folder` at `checkpoint` (default: its newest sound one). `tokenizer` is a
        loaded Tokenizer or a tokenizer.json path to use instead of the run's own."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such run folder")
        if checkpoint:
            path, state = Path(checkpoint), checkpoints.load(checkpoint)
        else:
            found = checkpoints.load_latest(folder)
            if found is None:
                raise CheckpointError(f"{checkpoints.checkpoint_dir(folder)}: no checkpoint "
                                      "to load")
            path, state = found
        if isinstance(tokenizer, Tokenizer):
            state.require_tokenizer(tokenizer.sha256, tokenizer.source)
        else:
            tokenizer = run_tokenizer(folder, state, tokenizer and str(tokenizer))
        # Checked like the command line's before anything is built (it may come from anyone).
        config = stored_config.checked(state.config, path, state.model)
        return cls(folder, config, tokenizer, path, state, torch.device(device))
