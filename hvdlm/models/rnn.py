"""The classic recurrent language model: Embedding -> multi-layer LSTM/GRU/RNN -> Linear.

As in Zaremba et al. (2014) and PyTorch's word_language_model example; the output layer may
share the embedding matrix (Press & Wolf, 2017), which needs n_embd == hidden size (it is here:
one width, `n_embd`, for both).
"""
from __future__ import annotations

import torch
from torch import nn

from hvdlm.config import ModelConfig
from hvdlm.models import vocab
from hvdlm.models.decoding import FillingWindowDecoder

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RNNLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = vocab.VocabEmbedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        # Dropout between recurrent layers only exists for n_layer > 1 (PyTorch warns otherwise).
        self.rnn = CELLS[cfg.arch](cfg.n_embd, cfg.n_embd, num_layers=cfg.n_layer, batch_first=True,
                                   dropout=cfg.dropout if cfg.n_layer > 1 else 0.0)
        self.head = vocab.VocabHead(cfg.n_embd, cfg.vocab_size, bias=True)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        vocab.pad_parameters(self, cfg.vocab_size)  # after init: the same draws as unpadded

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab). Each window starts from a zero state."""
        x = self.drop(self.embed(idx))     # (B, T, C)
        out, _ = self.rnn(x)               # (B, T, C)
        return self.head(self.drop(out))   # (B, T, V)

    def flops_per_token(self) -> float:
        return 6 * sum(p.numel() for p in self.parameters())

    def decoder(self, seq_len: int) -> "StateDecoder":
        return StateDecoder(self, seq_len)


class StateDecoder(FillingWindowDecoder):
    """Incremental decoding (hvdlm/models/decoding.py): the recurrent state after the window so
    far is kept, so a new token is one step from it, not the window again."""

    def __init__(self, model: RNNLM, seq_len: int):
        super().__init__(seq_len, model.embed.weight.device)
        self.model, self.state = model, None

    def _logits(self, ids: torch.Tensor, state) -> torch.Tensor:
        """ids (B, T) read from `state` -> the last one's logits (B, V)."""
        m = self.model
        out, self.state = m.rnn(m.drop(m.embed(ids)), state)  # (B, T, C)
        return m.head(m.drop(out[:, -1]))

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        return self._logits(ids, None)  # a zero state, as in training

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(tokens[:, None], self.state)
