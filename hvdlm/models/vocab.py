"""The vocabulary as the models hold it: padded to a multiple of 64 rows, read back unpadded.

Matrix shapes that are multiples of 64 take the fast GPU kernels (nanoGPT: 50,257 -> 50,304,
about 25% faster); on CPU the few extra rows cost little. The embedding and the output head
have `padded(vocab_size)` rows; `VocabHead` returns logits over the real vocabulary only, so a
padded id is never predicted, sampled or counted, and every caller of `model.head` sees the
real vocabulary; parameter counts leave the padding out. Checkpoints written before padding
hold `vocab_size` rows: `pad_rows` is the one place that widens them (a model's
load_state_dict, the optimizer's moments, init_from).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MULTIPLE = 64


def padded(vocab_size: int) -> int:
    """`vocab_size` rounded up to a multiple of 64."""
    return -(-vocab_size // MULTIPLE) * MULTIPLE


class VocabEmbedding(nn.Embedding):
    """The token embedding: `padded(vocab_size)` rows (once `pad_parameters` has run), of
    which ids < vocab_size are read."""

    def __init__(self, vocab_size: int, n_embd: int):
        super().__init__(vocab_size, n_embd)
        self.vocab_size = vocab_size


class VocabHead(nn.Linear):
    """The output layer: `padded(vocab_size)` rows (once `pad_parameters` has run), logits
    over the first `vocab_size`."""

    def __init__(self, n_embd: int, vocab_size: int, bias: bool):
        super().__init__(n_embd, vocab_size, bias=bias)
        self.vocab_size = vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The matmul keeps the aligned width; the slice drops the padded ids' logits.
        return F.linear(x, self.weight, self.bias)[..., :self.vocab_size]


def padding_parameters(model: nn.Module) -> int:
    """Parameters in padded rows (counted once where the head and embedding are tied): they
    exist for the kernels' sake and never take part, so parameter counts leave them out."""
    rows: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, (VocabEmbedding, VocabHead)):
            for p in module.parameters(recurse=False):
                rows[id(p)] = p[module.vocab_size:].numel()
    return sum(rows.values())


def pad_rows(tensor: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """A tensor of `vocab_size` rows (an unpadded checkpoint's) widened with zero rows to
    `padded(vocab_size)`; any other tensor unchanged."""
    rows = padded(vocab_size)
    if tensor.dim() == 0 or tensor.shape[0] != vocab_size or rows == vocab_size:
        return tensor
    return torch.cat([tensor, tensor.new_zeros(rows - vocab_size, *tensor.shape[1:])])


def pad_state(module: nn.Module, state: dict[str, Any], prefix: str, vocab_size: int) -> None:
    """Widen, in place, the entries of `state` that are vocabulary-sized where `module` holds
    padded ones (a load_state_dict pre-hook's work)."""
    own = module.state_dict()
    rows = padded(vocab_size)
    for name, ours in own.items():
        key = prefix + name
        theirs = state.get(key)
        if isinstance(theirs, torch.Tensor) and ours.dim() and ours.shape[0] == rows:
            state[key] = pad_rows(theirs, vocab_size)


def accept_unpadded_checkpoints(model: nn.Module, vocab_size: int) -> None:
    """Let `model.load_state_dict` take state dicts written before the vocabulary was padded."""
    def hook(module, state, prefix, *_):
        pad_state(module, state, prefix, vocab_size)
    model.register_load_state_dict_pre_hook(hook)


def pad_parameters(model: nn.Module, vocab_size: int) -> None:
    """Widen, after the model's own initialisation, its embedding and head to `padded` rows
    (zeros: never indexed, never in the logits, so their gradient stays zero). The models are
    built and initialised at the real vocabulary size first, so a seed draws the same initial
    weights as before padding existed; tied weights stay tied. Also lets the model load
    unpadded checkpoints."""
    rows, new = padded(vocab_size), {}
    for module in model.modules():
        if isinstance(module, (VocabEmbedding, VocabHead)):  # not positions: seq_len rows
            for name in ("weight", "bias"):
                param = getattr(module, name, None)
                if param is None or param.dim() == 0 or param.shape[0] != vocab_size:
                    continue
                if id(param) not in new:
                    new[id(param)] = nn.Parameter(pad_rows(param.detach(), vocab_size),
                                                  requires_grad=param.requires_grad)
                setattr(module, name, new[id(param)])
            if isinstance(module, nn.Embedding):
                module.num_embeddings = rows
            else:
                module.out_features = rows
    accept_unpadded_checkpoints(model, vocab_size)


def unpad(tensor: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The first `vocab_size` rows of a padded vocabulary tensor (export)."""
    return tensor[:vocab_size]
