"""`train.init_from=PATH`: start a run from existing weights (nanoGPT's `init_from`).

PATH is an hvdlm checkpoint file or a local GPT-2 or LlamaForCausalLM model folder
(config.json + model.safetensors, e.g. one written by `hvdlm.export`; its config.json's
model_type says which). Only the weights are taken: the step counter, optimizer and data
position start fresh. Nothing is ever downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch

from hvdlm import untrusted
from hvdlm.config import ModelConfig
from hvdlm.errors import DataError, UsageError
from hvdlm.models import gpt2_format, llama_format, safetensors, vocab
from hvdlm.models.llama import ffn_hidden, kv_heads
from hvdlm.training import checkpoint, stored_config
from hvdlm.training.stored_config import non_finite

SHAPE_KEYS = ("arch", "n_layer", "n_head", "n_embd", "seq_len", "vocab_size", "tie_embeddings",
              "kernel_size", "dilation_growth",  # cnn: a dilation changes no tensor's shape
              "n_kv_head", "ffn_hidden", "rope_theta")
# model_type in config.json -> (arch, its shape reader, its tensor reader)
FOLDERS = {"gpt2": ("gpt", gpt2_format.gpt2_shape, gpt2_format.from_gpt2),
           "llama": ("llama", llama_format.hf_shape, llama_format.from_hf)}


def _effective(shape: dict) -> dict:
    """A llama's n_kv_head and ffn_hidden as built (0 means a default: compare what it means)."""
    if shape.get("arch") != "llama":
        return shape
    cfg = ModelConfig(**{k: v for k, v in shape.items() if k in SHAPE_KEYS})
    return {**shape, "n_kv_head": kv_heads(cfg), "ffn_hidden": ffn_hidden(cfg)}


def _refuse_mismatch(path: Path, theirs: dict, ours: ModelConfig) -> None:
    theirs, mine = _effective(theirs), _effective(ours.__dict__)
    differ = [f"model.{k} is {theirs[k]} there, {mine[k]} here" for k in SHAPE_KEYS
              if k in theirs and theirs[k] != mine[k]]
    if differ:
        raise UsageError(f"train.init_from={path}: {'; '.join(differ)}")


def _from_folder(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    try:  # a regular file of at most 16 MiB (hvdlm/untrusted.py)
        config = untrusted.read_json(path / "config.json", 16 * untrusted.MiB, "config.json")
        if not isinstance(config, dict):
            raise ValueError("config.json is not an object")
        if config.get("model_type") not in FOLDERS:
            raise ValueError(f"model_type {config.get('model_type')!r}, not gpt2 or llama")
        arch, read_shape, read_tensors = FOLDERS[config["model_type"]]
        shape = read_shape(config)
    except DataError as err:
        raise UsageError(f"train.init_from={err}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError) as err:
        reason = str(err)[:200]  # names a key or a value of config.json, never the whole file
        raise UsageError(f"train.init_from={path}: not a GPT-2 or Llama model folder "
                         f"({reason})") from None
    _refuse_mismatch(path, {"arch": arch, **shape}, cfg)
    try:
        tensors = safetensors.load(path / "model.safetensors")
    except DataError as err:
        raise UsageError(f"train.init_from={err}") from None
    try:
        return read_tensors(cfg, tensors)
    except KeyError as err:
        raise UsageError(f"train.init_from={path}: model.safetensors lacks {err}") from None


def initial_weights(path: str | Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The state dict to start a model of shape `cfg` from; UsageError naming what differs,
    and refusing weights that hold NaN or inf (they would make every step non-finite)."""
    path = Path(path)
    if path.is_dir():
        return refuse_non_finite(path, _from_folder(path, cfg))
    if not path.is_file():
        raise UsageError(f"train.init_from={path}: no such checkpoint file or model folder")
    state = checkpoint.load(path)
    stored = stored_config.checked(state.config, path, state.model)
    _refuse_mismatch(path, stored.model.__dict__, cfg)
    return refuse_non_finite(path, state.model)


def refuse_non_finite(path: str | Path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state`, unless a floating-point tensor of it holds NaN or inf: UsageError naming it."""
    bad = non_finite(state)
    if bad:
        raise UsageError(f"train.init_from={path}: {bad} holds NaN or inf values; refused")
    return state


def check_shapes(path: str | Path, model: torch.nn.Module,
                 state: dict[str, torch.Tensor]) -> None:
    """UsageError naming every tensor whose shape differs (or that is missing or extra).

    Vocabulary rows are compared as load_state_dict will load them: padded (models/vocab.py),
    as a checkpoint or model folder without padding is."""
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
