"""The config stored in a checkpoint, checked like the command line's before any model is built
(hvdlm/training/run.py's `Run.open`, for evaluate, generate, export, explain and audit).

    cfg = stored_config.checked(state.config, path, state.model)

A checkpoint may come from anyone: its config passes hvdlm/config.py's `validate` (the rules of
the command line), must know its vocabulary, and may describe no more parameters than the file
holds values (a 1 KB file that claims a million layers would otherwise have the command
allocate for minutes before loading fails). The count compared is a lower bound computed from
the numbers alone (building even on the meta device costs seconds), so it costs nothing however
absurd the config. Beyond that, MAX_PARAMETERS (a trillion) is refused unless a caller passes
a higher `max_parameters`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from hvdlm.config import Config, ModelConfig, config_from_dict, validate
from hvdlm.errors import CheckpointError, HvdlmError

MAX_PARAMETERS = 10**12  # a trillion: beyond any model one of these commands can hold


def fewest_parameters(m: ModelConfig) -> int:
    """A lower bound of the parameters of a model of shape `m` (tests/security check it against
    real counts): the token embedding, GPT's position embedding, and per layer at least two
    n_embd x n_embd matrices (the CNN's gated convolution: 2 x kernel_size of them; the Llama's
    MLP: 3 n_embd x ffn_hidden)."""
    width = 2 * m.n_embd * (m.kernel_size if m.arch == "cnn" else 1)
    if m.arch == "llama":
        width += 3 * m.ffn_hidden
    return m.vocab_size * m.n_embd + (m.seq_len * m.n_embd if m.arch == "gpt" else 0) \
        + m.n_layer * m.n_embd * width


def checked(data: Any, source: str | Path, weights: Mapping[str, Any] | None = None,
            max_parameters: int = MAX_PARAMETERS) -> Config:
    """The Config `data` describes, or CheckpointError (one line naming `source`) if it is not
    one the command line would accept, or describes more parameters than `weights` hold."""
    try:
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            raise CheckpointError("not a table of config sections")
        cfg = config_from_dict(data)
        validate(cfg)
        if cfg.model.vocab_size < 1:
            raise CheckpointError("model.vocab_size must be >= 1")
        count = fewest_parameters(cfg.model)
    except (HvdlmError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{source}: its stored config is refused ({err})") from None
    held = None if weights is None else sum(
        t.numel() for t in weights.values() if isinstance(t, torch.Tensor))
    if held is not None and count > held:
        raise CheckpointError(f"{source}: its config describes at least {count:,} parameters "
                              f"but the file holds {held:,} values; refused")
    if count > max_parameters:
        raise CheckpointError(f"{source}: its config describes at least {count:,} parameters, "
                              f"more than the limit of {max_parameters:,}; refused")
    return cfg


def non_finite(state: Mapping[str, Any]) -> str | None:
    """The name of the first floating-point tensor of `state` holding NaN or inf, else None."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() \
                and not bool(torch.isfinite(value).all()):
            return name
    return None
