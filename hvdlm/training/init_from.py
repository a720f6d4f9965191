"""`train.init_from=PATH`: start a run from existing weights (nanoGPT's `init_from`).

PATH is an hvdlm checkpoint file or a local GPT-2 model folder (config.json +
model.safetensors, e.g. one written by `hvdlm.export`). Only the weights are taken: the step
counter, optimizer and data position start fresh. Nothing is ever downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from hvdlm.config import ModelConfig, config_from_dict
from hvdlm.errors import UsageError
from hvdlm.models import gpt2_format, safetensors, vocab
from hvdlm.training import checkpoint

SHAPE_KEYS = ("arch", "n_layer", "n_head", "n_embd", "seq_len", "vocab_size", "tie_embeddings",
              "kernel_size", "dilation_growth")  # cnn: a dilation changes no tensor's shape


def _refuse_mismatch(path: Path, theirs: dict, ours: ModelConfig) -> None:
    differ = [f"model.{k} is {theirs[k]} there, {getattr(ours, k)} here" for k in SHAPE_KEYS
              if k in theirs and theirs[k] != getattr(ours, k)]
    if differ:
        raise UsageError(f"train.init_from={path}: {'; '.join(differ)}")


def _from_gpt2_folder(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    try:
        config = json.loads((path / "config.json").read_text())
        shape = gpt2_format.gpt2_shape(config)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"train.init_from={path}: not a GPT-2 model folder ({err})") from None
    _refuse_mismatch(path, {"arch": "gpt", **shape}, cfg)
    tensors = safetensors.load(path / "model.safetensors")
    try:
        return gpt2_format.from_gpt2(cfg, tensors)
    except KeyError as err:
        raise UsageError(f"train.init_from={path}: model.safetensors lacks {err}") from None


def initial_weights(path: str | Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict to start a model of shape `cfg` from; UsageError naming what differs."""
    path = Path(path)
    if path.is_dir():
        return _from_gpt2_folder(path, cfg)
    if not path.is_file():
        raise UsageError(f"train.init_from={path}: no such checkpoint file or model folder")
    state = checkpoint.load(path)
    _refuse_mismatch(path, config_from_dict(state.config).model.__dict__, cfg)
    return state.model


def check_shapes(path: str | Path, model: torch.nn.Module,
                 state: dict[str, torch.Tensor]) -> None:
    """UsageError naming every tensor whose shape differs (or that is missing or extra).

    Vocabulary rows are compared as load_state_dict will load them: padded (models/vocab.py),
    as a checkpoint or GPT-2 folder without padding is."""
    state = dict(state)
    vocab.pad_state(model, state, "", model.cfg.vocab_size)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"{k} {theirs.get(k, 'missing')} vs {shape}" for k, shape in ours.items()
                if theirs.get(k) != shape]
    problems += [f"{k} unexpected" for k in theirs.keys() - ours.keys()]
    if problems:
        raise UsageError(f"train.init_from={path}: shapes differ: {', '.join(problems[:5])}"
                         + (f" and {len(problems) - 5} more" if len(problems) > 5 else ""))
