"""Which context tokens a prediction leans on: gradient x input and integrated gradients.

Both attribute f = log p(token p | tokens 0..p-1) to the context tokens through their token
embeddings e_i (GPT's `wte`, the recurrent models' `embed`; positions are left as they are):
  gradient x input   a_i = df/de_i . e_i, the first-order effect of scaling e_i (so a finite
                     difference of f in that scale checks it);
  integrated grads   a_i = e_i . mean over alpha of df/de_i at alpha*e (Sundararajan et al.,
                     2017; baseline: zero embeddings, midpoint rule), whose sum is
                     f(e) - f(0) up to the quadrature error ("completeness", reported).
Any model whose token ids go through one nn.Embedding works: a forward hook hands the model
the vectors being differentiated instead of the looked-up ones.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def token_embedding(model: nn.Module) -> nn.Embedding | None:
    """The layer that looks token ids up: `wte` or `embed`, else the one nn.Embedding with a row
    per vocabulary entry; None if there is no such single layer."""
    for name in ("wte", "embed"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Embedding):
            return layer
    vocab = getattr(getattr(model, "cfg", None), "vocab_size", None)
    found = [m for m in model.modules()
             if isinstance(m, nn.Embedding) and m.num_embeddings == vocab]
    return found[0] if len(found) == 1 else None


@contextmanager
def embeddings_replaced(model: nn.Module, vectors: torch.Tensor) -> Iterator[None]:
    """Inside the block, the model's token embedding layer returns `vectors` (B, T, C)."""
    handle = token_embedding(model).register_forward_hook(lambda module, args, out: vectors)
    try:
        yield
    finally:
        handle.remove()


def _no_cudnn_rnn():
    # cuDNN's RNN backward refuses models in eval mode; the native kernels do not.
    return torch.backends.cudnn.flags(enabled=False)


def target_logprob(model: nn.Module, idx: torch.Tensor, position: int,
                   vectors: torch.Tensor) -> torch.Tensor:
    """log p(idx[0, position] | idx[0, :position]) for each row of `vectors` (B, position, C),
    which stand in for the context's token embeddings: (B,)."""
    context = idx[:, :position].expand(vectors.shape[0], -1)
    with embeddings_replaced(model, vectors):
        logits = model(context)[:, -1]                              # (B, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 at least
    return torch.log_softmax(logits, dim=-1)[:, idx[0, position]]


def context_embeddings(model: nn.Module, idx: torch.Tensor, position: int) -> torch.Tensor:
    with torch.no_grad():
        return token_embedding(model)(idx[:, :position])            # (1, position, C)


def gradient_x_input(model: nn.Module, idx: torch.Tensor, position: int) -> tuple[torch.Tensor,
                                                                                  float]:
    """a_i = df/de_i . e_i for the context tokens i < position, and f itself."""
    e = context_embeddings(model, idx, position).requires_grad_(True)
    with torch.enable_grad(), _no_cudnn_rnn():
        f = target_logprob(model, idx, position, e)
        (grad,) = torch.autograd.grad(f.sum(), e)
    return (grad * e).sum(-1)[0].detach(), float(f.detach())


def integrated_gradients(model: nn.Module, idx: torch.Tensor, position: int, steps: int = 64,
                         chunk: int = 8) -> dict:
    """Integrated gradients from zero embeddings to the context's, `steps` midpoints, `chunk`
    of them per pass; with f(e), f(0) and the completeness gap |sum a - (f(e) - f(0))|,
    relative to |f(e) - f(0)|."""
    e = context_embeddings(model, idx, position)
    total = torch.zeros_like(e)
    alphas = (torch.arange(steps, dtype=e.dtype, device=e.device) + 0.5) / steps
    with torch.enable_grad(), _no_cudnn_rnn():
        for part in alphas.split(chunk):
            scaled = (part[:, None, None] * e).requires_grad_(True)  # (b, position, C)
            f = target_logprob(model, idx, position, scaled)
            (grad,) = torch.autograd.grad(f.sum(), scaled)
            total += grad.sum(0, keepdim=True)
    attributions = (e * total / steps).sum(-1)[0]
    with torch.no_grad():
        f_input = float(target_logprob(model, idx, position, e))
        f_base = float(target_logprob(model, idx, position, torch.zeros_like(e)))
    delta = f_input - f_base
    gap = abs(float(attributions.double().sum()) - delta) / max(abs(delta), 1e-12)
    return {"attributions": attributions, "f_input": f_input, "f_baseline": f_base,
            "completeness_gap": gap, "steps": steps}
