"""A decoder-only transformer language model (GPT-2 shaped), in plain PyTorch.

Pre-LayerNorm blocks, causal `scaled_dot_product_attention` (fused kernels on recent PyTorch),
learned positions, GELU MLP, input/output embeddings tied by default, N(0, 0.02) init with the
residual projections scaled by 1/sqrt(2·n_layer) (GPT-2) so the residual stream's variance does
not grow with depth.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hvdlm.config import ModelConfig
from hvdlm.models import vocab
from hvdlm.models.decoding import FillingWindowDecoder
from hvdlm.models.checkpointing import run_blocks


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.proj.is_residual_projection = True
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`cache` (decoding): this layer's [keys, values] so far, extended in place; the new
        queries are either a window from its start (cache empty) or one token after it."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            if cache:
                assert T == 1, "after the first window, one token at a time"
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        # One new query after cached keys sees them all; is_causal would align it to the first.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.proj.is_residual_projection = True
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, cache: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = vocab.VocabEmbedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = vocab.VocabHead(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.wte.weight
        self.apply(self._init_weights)
        self.activation_checkpointing = False  # train.activation_checkpointing sets it
        vocab.pad_parameters(self, cfg.vocab_size)  # after init: the same draws as unpadded

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std /= math.sqrt(2 * self.cfg.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab) over the real vocabulary."""
        B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of {T} tokens exceeds model.seq_len={self.cfg.seq_len}")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        x = run_blocks(self.blocks, x, self.activation_checkpointing and self.training)
        return self.head(self.ln_f(x))                # (B, T, vocab): padded ids left out

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N (weights, fwd+bwd) + 12·L·H·Q·T (attention; PaLM App. B)."""
        c = self.cfg
        n = sum(p.numel() for p in self.parameters()) - self.wpe.weight.numel()
        return 6 * n + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.seq_len

    def decoder(self, seq_len: int) -> "KVDecoder":
        return KVDecoder(self, min(seq_len, self.cfg.seq_len))


class KVDecoder(FillingWindowDecoder):
    """Incremental decoding (hvdlm/models/decoding.py): each layer's keys and values of the
    window so far are kept, so a new token is one query against them, not the window again."""

    def __init__(self, model: GPT, seq_len: int):
        super().__init__(seq_len, model.wte.weight.device)
        self.model, self.caches = model, []

    def _logits(self, ids: torch.Tensor, first_position: int) -> torch.Tensor:
        """ids (B, T) at positions first_position.. -> the last one's logits (B, V)."""
        m = self.model
        pos = torch.arange(first_position, first_position + ids.shape[1], device=self.device)
        x = m.drop(m.wte(ids) + m.wpe(pos))  # (B, T, C)
        for block, cache in zip(m.blocks, self.caches):
            x = block(x, cache)
        return m.head(m.ln_f(x[:, -1]))

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        self.caches = [[] for _ in self.model.blocks]
        return self._logits(ids, 0)

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(tokens[:, None], self.ids.shape[1] - 1)
