"""Autoregressive sampling from any of the models: temperature, top-k, end-of-text."""
from __future__ import annotations

import torch


@torch.no_grad()
def sample(model: torch.nn.Module, ids: list[int], max_new_tokens: int, seq_len: int,
           temperature: float = 1.0, top_k: int = 0, eos_id: int | None = None,
           generator: torch.Generator | None = None) -> list[int]:
    """Autoregressive sampling; the context is cropped to the model's last `seq_len` tokens."""
    out = list(ids)
    for _ in range(max_new_tokens):
        context = torch.tensor([out[-seq_len:]], dtype=torch.long)
        logits = model(context)[0, -1].float()                     # (vocab,)
        if temperature == 0:
            token = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits[logits < kth] = -float("inf")
            token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
        if token == eos_id:
            break
        out.append(token)
    return out[len(ids):]
