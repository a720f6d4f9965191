"""Inside the GPT and the Llama: attention weights computed explicitly, per-head summaries, the
logit lens.

`scaled_dot_product_attention` (the fused kernel the model runs) never shows its weights, so
`explicit_attention` recomputes them from the block's own projections,
softmax(Q K^T / sqrt(head size)) with the causal mask (the Llama's Q and K rotated, each
key/value head repeated for the query heads that share it), and `trace` checks that those
weights times V, through the block's output projection, give the output the model computed.
The logit lens reads the residual stream after each block through the final layer norm (the
Llama's RMSNorm) and the output head (nostalgebraist, 2020); after the last block that is
exactly the model's logits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hvdlm.models.gpt import GPT, CausalSelfAttention
from hvdlm.models.llama import Attention, Llama


@dataclass
class GPTTrace:
    """One forward pass of one window (1, T), with what the probes need from inside it."""

    logits: torch.Tensor            # (1, T, V)
    residuals: list[torch.Tensor]   # n_layer + 1 of (1, T, C): embeddings, then after each block
    attention: list[torch.Tensor]   # n_layer of (n_head, T, T), computed explicitly
    fused_error: float              # max |explicit - fused| over the attention outputs


def explicit_attention(attn: CausalSelfAttention | Attention, x: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention weights (B, nh, T, T) of `attn` on its input x (B, T, C), and its output
    (B, T, C) recomputed from those weights: proj(weights @ V)."""
    B, T, C = x.shape
    nh = attn.n_head
    if isinstance(attn, Attention):  # the Llama's: rotary positions, shared key/value heads
        rotary, group = attn.rotary[0], attn.n_head // attn.n_kv
        q = rotary(attn.heads(x, attn.q, nh), 0)
        k = rotary(attn.heads(x, attn.k, attn.n_kv), 0).repeat_interleave(group, dim=1)
        v = attn.heads(x, attn.v, attn.n_kv).repeat_interleave(group, dim=1)
    else:
        q, k, v = attn.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))  # (B,nh,T,hs)
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // nh)                       # (B, nh, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    y = (weights @ v).transpose(1, 2).reshape(B, T, C)
    return weights, (attn.o if isinstance(attn, Attention) else attn.proj)(y)


@torch.no_grad()
def trace(model: GPT | Llama, idx: torch.Tensor) -> GPTTrace:
    """Run `model` on idx (1, T) with hooks that keep the residual stream and each attention
    layer's input and output, then recompute every layer's attention weights explicitly."""
    residuals: list[torch.Tensor] = []
    attn_in: list[torch.Tensor] = []
    attn_out: list[torch.Tensor] = []
    hooks = [model.drop.register_forward_hook(lambda m, a, out: residuals.append(out))]
    for block in model.blocks:
        hooks += [block.register_forward_hook(lambda m, a, out: residuals.append(out)),
                  block.attn.register_forward_pre_hook(lambda m, a: attn_in.append(a[0])),
                  block.attn.register_forward_hook(lambda m, a, out: attn_out.append(out))]
    try:
        logits = model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    attention, error = [], 0.0
    for block, x, fused in zip(model.blocks, attn_in, attn_out):
        weights, out = explicit_attention(block.attn, x)
        attention.append(weights[0])
        error = max(error, (out - fused).abs().max().item())
    return GPTTrace(logits, residuals, attention, error)


def head_summaries(weights: torch.Tensor) -> dict[str, list[float | None]]:
    """Per head of weights (nh, T, T), averaged over the query positions 1..T-1 (position 0
    can only look at itself): mean attention distance in tokens, entropy in bits, and the
    shares of attention on the previous token and on the first token."""
    nh, T, _ = weights.shape
    if T < 2:
        return {k: [None] * nh for k in ("distance", "entropy_bits", "previous", "first")}
    rows = weights[:, 1:].float()                                    # (nh, T-1, T)
    query = torch.arange(1, T, dtype=torch.float32, device=rows.device)
    key = torch.arange(T, dtype=torch.float32, device=rows.device)
    distance = query - rows @ key                                    # rows sum to 1
    entropy = -torch.special.xlogy(rows, rows).sum(-1) / math.log(2)
    previous = rows.diagonal(offset=0, dim1=1, dim2=2)               # weight[i, i-1], i >= 1
    first = rows[:, :, 0]
    return {name: [round(float(v), 6) for v in t.mean(-1)] for name, t in
            (("distance", distance), ("entropy_bits", entropy), ("previous", previous),
             ("first", first))}


def pooled(weights: torch.Tensor, size: int) -> torch.Tensor:
    """(…, T, T) maps averaged down to at most (size, size) cells for drawing."""
    T = weights.shape[-1]
    if T <= size:
        return weights
    return F.adaptive_avg_pool2d(weights.reshape(-1, 1, T, T), size).reshape(
        *weights.shape[:-2], size, size)


def lens_logits(model: GPT | Llama, residual: torch.Tensor) -> torch.Tensor:
    """The logit lens at one point of the residual stream: head(ln_f(residual))."""
    return model.head((model.norm if isinstance(model, Llama) else model.ln_f)(residual))


@torch.no_grad()
def logit_lens(model: GPT | Llama, residuals: list[torch.Tensor], targets: torch.Tensor,
               logits: torch.Tensor | None = None) -> dict:
    """For every residual (1, T, C) and position: the top token and its probability, and the
    probability of the true next token targets[t] (T,); given the model's `logits` (1, T, V),
    also the largest difference between them and the lens after the last block."""
    top_ids, top_p, true_p = [], [], []
    for residual in residuals:                                       # one layer at a time
        z = lens_logits(model, residual)[0].float()                  # (T, V)
        norm = torch.logsumexp(z, dim=-1)                            # log of softmax's sum
        best, ids = z.max(dim=-1)
        top_ids.append(ids.tolist())
        top_p.append([round(float(p), 6) for p in (best - norm).exp()])
        true = z.gather(-1, targets[:, None])[:, 0]
        true_p.append([round(float(p), 6) for p in (true - norm).exp()])
    out = {"top_ids": top_ids, "top_p": top_p, "true_p": true_p}
    if logits is not None:
        out["last_layer_max_error"] = float((z - logits[0].float()).abs().max())
    return out
