"""hvdlm's Llama as a Hugging Face `LlamaForCausalLM` and back, in plain PyTorch.

One to one, tensor for tensor: hvdlm rotates a head's dimensions i and i + head_size/2 together,
as Hugging Face's `rotate_half` does, so its q_proj/k_proj rows are hvdlm's `attn.q`/`attn.k`
rows in the same order (no permutation; Hugging Face's converter permutes only Meta's
interleaved originals into this layout), and k_proj/v_proj hold n_kv_head heads as hvdlm's do
(query head h reads key/value head h // (n_head / n_kv_head) in both). RMSNorm eps 1e-5, no
biases, SiLU. Used by `hvdlm.export` and `train.init_from`. The vocabulary rows, padded in
hvdlm (models/vocab.py), are the real vocabulary only in the Hugging Face folder.
"""
from __future__ import annotations

from typing import Any

import torch

from hvdlm.config import ModelConfig
from hvdlm.models import vocab
from hvdlm.models.llama import RMS_EPS, ffn_hidden, kv_heads

_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q.weight": "self_attn.q_proj.weight", "attn.k.weight": "self_attn.k_proj.weight",
    "attn.v.weight": "self_attn.v_proj.weight", "attn.o.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight", "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
}
VOCAB_ROWS = ("embed.weight", "head.weight")  # padded in hvdlm, not in Hugging Face's


def renames(cfg: ModelConfig) -> list[tuple[str, str]]:
    """(hvdlm name, Hugging Face name) for every stored tensor of a Llama of shape `cfg`."""
    out = [("embed.weight", "model.embed_tokens.weight"), ("norm.weight", "model.norm.weight")]
    for i in range(cfg.n_layer):
        out += [(f"blocks.{i}.{ours}", f"model.layers.{i}.{theirs}")
                for ours, theirs in _LAYER.items()]
    if not cfg.tie_embeddings:
        out.append(("head.weight", "lm_head.weight"))
    return out


def to_hf(cfg: ModelConfig, state: dict[str, torch.Tensor], eos_id: int,
          dtype: torch.dtype = torch.float32) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """`config.json` contents and tensors of a LlamaForCausalLM for an hvdlm Llama's state."""
    tensors = {}
    for ours, theirs in renames(cfg):
        t = state[ours].detach().to(dtype)
        tensors[theirs] = (vocab.unpad(t, cfg.vocab_size) if ours in VOCAB_ROWS else t
                           ).contiguous().clone()
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd,
        "intermediate_size": ffn_hidden(cfg), "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head, "num_key_value_heads": kv_heads(cfg),
        "head_dim": cfg.n_embd // cfg.n_head, "hidden_act": "silu",
        "max_position_embeddings": cfg.seq_len, "rms_norm_eps": RMS_EPS,
        # rope_theta: the older key, which other readers of these folders still take
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False, "mlp_bias": False, "attention_dropout": cfg.dropout,
        "initializer_range": 0.02, "use_cache": True, "pretraining_tp": 1,
        "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": eos_id,
        "eos_token_id": eos_id, "dtype": str(dtype).removeprefix("torch."),
    }
    return config, tensors


def hf_shape(config: dict[str, Any]) -> dict[str, Any]:
    """The ModelConfig fields a LlamaForCausalLM config.json fixes (KeyError/ValueError if it
    is not one hvdlm's Llama can hold)."""
    if config.get("model_type") != "llama":
        raise ValueError(f"model_type is {config.get('model_type')!r}, not 'llama'")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"rope_type {rope.get('rope_type', rope.get('type'))!r}: only plain "
                         "rotary embeddings match hvdlm's Llama")
    heads, width = config["num_attention_heads"], config["hidden_size"]
    differ = [(key, config.get(key), want) for key, want in (
        ("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False),
        ("head_dim", width // heads), ("rms_norm_eps", RMS_EPS))
        if config.get(key, want) != want]
    if differ:
        raise ValueError(", ".join(f"{k} is {v!r}, hvdlm's Llama has {w!r}"
                                   for k, v, w in differ))
    return {"vocab_size": config["vocab_size"], "seq_len": config["max_position_embeddings"],
            "n_embd": width, "n_layer": config["num_hidden_layers"], "n_head": heads,
            "n_kv_head": config.get("num_key_value_heads") or heads,
            "ffn_hidden": config["intermediate_size"],
            "rope_theta": float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            "tie_embeddings": config.get("tie_word_embeddings", False)}


def from_hf(cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An hvdlm Llama state dict (shape `cfg`; unpadded rows, which the model's
    load_state_dict pads) from LlamaForCausalLM tensors; KeyError names a missing one."""
    state = {ours: tensors[theirs].float().contiguous() for ours, theirs in renames(cfg)}
    if cfg.tie_embeddings:
        state["head.weight"] = state["embed.weight"]
    return state
