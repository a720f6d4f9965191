"""hvdlm's GPT as a Hugging Face GPT-2 (`GPT2LMHeadModel`) and back, in plain PyTorch.

The architectures match one to one: pre-LayerNorm blocks (eps 1e-5), exact GELU, learned
positions, a fused q/k/v projection, tied input/output embeddings. GPT-2 stores its linear
layers as Conv1D, whose weight is the transpose of `nn.Linear`'s. Used by `hvdlm.export` and by
`train.init_from` (hvdlm/training/init_from.py). hvdlm pads the vocabulary rows to a multiple of
64 (models/vocab.py); GPT-2 files hold the real vocabulary only: export drops the padding, and
the model's load_state_dict adds it back.
"""
from __future__ import annotations

from typing import Any

import torch

from hvdlm.config import ModelConfig
from hvdlm.models import vocab

# hvdlm name pattern -> GPT-2 name pattern, "{i}" for the block; True: Conv1D (transposed).
_BLOCK = {
    "ln1.weight": ("ln_1.weight", False), "ln1.bias": ("ln_1.bias", False),
    "attn.qkv.weight": ("attn.c_attn.weight", True), "attn.qkv.bias": ("attn.c_attn.bias", False),
    "attn.proj.weight": ("attn.c_proj.weight", True),
    "attn.proj.bias": ("attn.c_proj.bias", False),
    "ln2.weight": ("ln_2.weight", False), "ln2.bias": ("ln_2.bias", False),
    "mlp.fc.weight": ("mlp.c_fc.weight", True), "mlp.fc.bias": ("mlp.c_fc.bias", False),
    "mlp.proj.weight": ("mlp.c_proj.weight", True), "mlp.proj.bias": ("mlp.c_proj.bias", False),
}
VOCAB_ROWS = ("wte.weight", "head.weight")  # padded in hvdlm, not in GPT-2
_TOP = {"wte.weight": "transformer.wte.weight", "wpe.weight": "transformer.wpe.weight",
        "ln_f.weight": "transformer.ln_f.weight", "ln_f.bias": "transformer.ln_f.bias"}


def _names(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    """(hvdlm name, GPT-2 name, transposed) for every stored tensor of a GPT of shape `cfg`."""
    out = [(ours, theirs, False) for ours, theirs in _TOP.items()]
    for i in range(cfg.n_layer):
        out += [(f"blocks.{i}.{ours}", f"transformer.h.{i}.{theirs}", t)
                for ours, (theirs, t) in _BLOCK.items()]
    if not cfg.tie_embeddings:
        out.append(("head.weight", "lm_head.weight", False))
    return out


def to_gpt2(cfg: ModelConfig, state: dict[str, torch.Tensor], eos_id: int,
            dtype: torch.dtype = torch.float32) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """GPT-2 `config.json` contents and tensors for an hvdlm GPT's state dict."""
    tensors = {}
    for ours, theirs, transposed in _names(cfg):
        t = state[ours].detach().to(dtype)
        if ours in VOCAB_ROWS:
            t = vocab.unpad(t, cfg.vocab_size)
        tensors[theirs] = (t.t() if transposed else t).contiguous().clone()
    config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.seq_len, "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": 4 * cfg.n_embd,
        "activation_function": "gelu", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
        "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": eos_id, "eos_token_id": eos_id,
        "dtype": str(dtype).removeprefix("torch."),
    }
    return config, tensors


def gpt2_shape(config: dict[str, Any]) -> dict[str, Any]:
    """The ModelConfig fields a GPT-2 config.json fixes (KeyError/ValueError if it is not one
    hvdlm's GPT can hold)."""
    if config.get("model_type") != "gpt2":
        raise ValueError(f"model_type is {config.get('model_type')!r}, not 'gpt2'")
    if config.get("activation_function", "gelu_new") != "gelu" \
            or config.get("n_inner") not in (None, 4 * config["n_embd"]):
        raise ValueError("only exact-GELU GPT-2 with a 4x MLP matches hvdlm's GPT")
    return {"vocab_size": config["vocab_size"], "seq_len": config["n_positions"],
            "n_embd": config["n_embd"], "n_layer": config["n_layer"], "n_head": config["n_head"],
            "tie_embeddings": config.get("tie_word_embeddings", True)}


def from_gpt2(cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An hvdlm GPT state dict (shape `cfg`; unpadded rows, which the model's load_state_dict
    pads) from GPT-2 tensors; KeyError names a missing one."""
    state = {}
    for ours, theirs, transposed in _names(cfg):
        t = tensors[theirs].float()
        state[ours] = (t.t() if transposed else t).contiguous()
    if cfg.tie_embeddings:
        state["head.weight"] = state["wte.weight"]
    return state
