"""A Llama-style decoder (`model.arch=llama`), in plain PyTorch.

Pre-norm blocks with RMSNorm (eps 1e-5), rotary position embeddings (Su et al. 2021; base
`model.rope_theta`), a SwiGLU MLP (Shazeer 2020: down(silu(gate(x)) * up(x))), grouped-query
attention (`model.n_kv_head` key/value heads, each shared by n_head / n_kv_head query heads;
Ainslie et al. 2023), no biases, no learned positions; input/output embeddings tied when
`model.tie_embeddings`. The MLP's hidden width is `model.ffn_hidden`, or by default Llama's
rule: 2/3 of 4·n_embd (the same parameters as a 4x GELU MLP), rounded up to a multiple of 64.

Rotary layout: a head's dimensions i and i + head_size/2 are rotated together (GPT-NeoX's
"rotate half", which Hugging Face's LlamaForCausalLM uses), so Hugging Face's q/k projections
map onto these one to one (hvdlm/models/llama_format.py). Meta's original checkpoints pair
dimensions 2i and 2i+1 instead, which is why Hugging Face's converter permutes their q/k rows.

Module names follow the roles Hugging Face gives them, so the mapping is a list of renames.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hvdlm.config import ModelConfig
from hvdlm.models import vocab
from hvdlm.models.checkpointing import run_blocks
from hvdlm.models.decoding import FillingWindowDecoder

RMS_EPS = 1e-5


def ffn_hidden(cfg: ModelConfig) -> int:
    """The SwiGLU hidden width: model.ffn_hidden, or 8·n_embd/3 rounded up to a multiple of 64."""
    if cfg.ffn_hidden > 0:
        return cfg.ffn_hidden
    return -(-int(8 * cfg.n_embd / 3) // 64) * 64


def kv_heads(cfg: ModelConfig) -> int:
    """Key/value heads: model.n_kv_head, 0 meaning one per query head (plain multi-head)."""
    return cfg.n_kv_head or cfg.n_head


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight, computed in fp32 and returned in x's type."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.float()
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + RMS_EPS)
        return self.weight * wide.to(x.dtype)


class Rotary(nn.Module):
    """cos and sin of every position's angles (seq_len, head_size), shared by all layers; not
    in the state dict (they follow from the config)."""

    def __init__(self, head_size: int, seq_len: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2).float() / head_size)
        angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # dims i and i + hs/2 share an angle
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x (B, heads, T, hs) at positions start.. rotated."""
        T, half = x.shape[2], x.shape[-1] // 2
        cos = self.cos[start:start + T].to(x.dtype)
        sin = self.sin[start:start + T].to(x.dtype)
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: Rotary):
        super().__init__()
        self.n_head, self.n_kv = cfg.n_head, kv_heads(cfg)
        self.head_size = cfg.n_embd // cfg.n_head
        self.q = nn.Linear(cfg.n_embd, self.n_head * self.head_size, bias=False)
        self.k = nn.Linear(cfg.n_embd, self.n_kv * self.head_size, bias=False)
        self.v = nn.Linear(cfg.n_embd, self.n_kv * self.head_size, bias=False)
        self.o = nn.Linear(self.n_head * self.head_size, cfg.n_embd, bias=False)
        self.o.is_residual_projection = True
        self.rotary = [rotary]  # a list: one Rotary for the model, not a submodule per layer
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def heads(self, x: torch.Tensor, proj: nn.Linear, n: int) -> torch.Tensor:
        B, T, _ = x.shape
        return proj(x).view(B, T, n, self.head_size).transpose(1, 2)  # (B, n, T, hs)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`cache` (decoding): this layer's rotated keys and values so far, extended in place;
        the new tokens' positions follow the cached ones."""
        B, T, C = x.shape
        start = cache[0].shape[2] if cache else 0
        rotary = self.rotary[0]
        q = rotary(self.heads(x, self.q, self.n_head), start)
        k = rotary(self.heads(x, self.k, self.n_kv), start)
        v = self.heads(x, self.v, self.n_kv)
        if cache is not None:
            if cache:
                assert T == 1, "after the first window, one token at a time"
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        group = self.n_head // self.n_kv  # query head h reads key/value head h // group
        if group > 1:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.o(y.transpose(1, 2).reshape(B, T, C)))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = ffn_hidden(cfg)
        self.gate = nn.Linear(cfg.n_embd, hidden, bias=False)
        self.up = nn.Linear(cfg.n_embd, hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.n_embd, bias=False)
        self.down.is_residual_projection = True
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.silu(self.gate(x)) * self.up(x)))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: Rotary):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd)
        self.attn = Attention(cfg, rotary)
        self.mlp_norm = RMSNorm(cfg.n_embd)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cache)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.rotary = Rotary(cfg.n_embd // cfg.n_head, cfg.seq_len, cfg.rope_theta)
        self.embed = vocab.VocabEmbedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(LlamaBlock(cfg, self.rotary) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd)
        self.head = vocab.VocabHead(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.apply(self._init_weights)
        self.activation_checkpointing = False  # train.activation_checkpointing sets it
        vocab.pad_parameters(self, cfg.vocab_size)  # after init: the same draws as unpadded

    def _init_weights(self, module: nn.Module) -> None:
        """N(0, 0.02), residual projections / sqrt(2·n_layer) as GPT-2; norms start at 1."""
        if isinstance(module, nn.Linear):
            scale = math.sqrt(2 * self.cfg.n_layer)
            std = 0.02 / scale if getattr(module, "is_residual_projection", False) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab) over the real vocabulary."""
        if idx.shape[1] > self.cfg.seq_len:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds "
                             f"model.seq_len={self.cfg.seq_len}")
        x = run_blocks(self.blocks, self.drop(self.embed(idx)),
                       self.activation_checkpointing and self.training)
        return self.head(self.norm(x))

    def flops_per_token(self) -> float:
        """6N (weights, fwd+bwd) + 12·L·H·Q·T (attention scores and mixing; PaLM App. B)."""
        c = self.cfg
        n = sum(p.numel() for p in self.parameters())
        return 6 * n + 12 * c.n_layer * c.n_embd * c.seq_len

    def decoder(self, seq_len: int) -> "LlamaDecoder":
        return LlamaDecoder(self, min(seq_len, self.cfg.seq_len))


class LlamaDecoder(FillingWindowDecoder):
    """Incremental decoding with each layer's rotated keys and values kept (as GPT's
    KVDecoder): a new token is one query at the next position against them."""

    def __init__(self, model: Llama, seq_len: int):
        super().__init__(seq_len, model.embed.weight.device)
        self.model = model
        self.caches: list[list[torch.Tensor]] = []

    def _next(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.model.drop(self.model.embed(ids))
        for block, cache in zip(self.model.blocks, self.caches):
            x = block(x, cache)
        return self.model.head(self.model.norm(x[:, -1]))  # (B, V)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        self.caches = [[] for _ in self.model.blocks]
        return self._next(ids)

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._next(tokens[:, None])
