"""A causal gated convolutional language model (Dauphin et al., 2017), in plain PyTorch.

    python -m hvdlm.train --data DATA --out RUN model.arch=cnn model.kernel_size=4 \
        model.dilation_growth=2

Embedding -> n_layer residual blocks -> LayerNorm -> head (tied to the embedding by default).
A block is `x + Dropout(GLU(CausalConv1d(LayerNorm(x))))`: a 1-D convolution from C to 2C
channels whose halves gate each other (the gated linear unit, A * sigmoid(B)), kernel
`kernel_size`, dilation `dilation_growth**i` in layer i. Causal because the conv input is padded
on the left only, with `span = (kernel_size - 1) * dilation` zeros: position t reads positions
t - span .. t. So an output sees `receptive_field` tokens (config.py), which validation keeps
within seq_len: training windows then show it everything it can use, and generation through the
cache below equals recomputing the last seq_len tokens.

No positions are embedded: convolutions are the same at every position (the zero padding is
what tells the first positions where a text starts).

Incremental decoding (`decoder()`): each block keeps its conv's last `span` inputs; a new token
is one column through every layer, whatever the length of the text so far.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hvdlm.config import ModelConfig
from hvdlm.models import vocab
from hvdlm.models.checkpointing import run_blocks


class GatedConvBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, dilation: int):
        super().__init__()
        self.span = (cfg.kernel_size - 1) * dilation  # past inputs each output reads
        self.ln = nn.LayerNorm(cfg.n_embd)
        self.conv = nn.Conv1d(cfg.n_embd, 2 * cfg.n_embd, cfg.kernel_size, dilation=dilation)
        self.drop = nn.Dropout(cfg.dropout)

    def conv_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) residual stream -> (B, C, T), the layout Conv1d reads."""
        return self.ln(x).transpose(1, 2)

    def mix(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) plus the gated conv of h (B, C, span + T): the last T columns' outputs."""
        gated = F.glu(self.conv(h), dim=1)             # (B, 2C, T) -> (B, C, T)
        return x + self.drop(gated.transpose(1, 2))    # (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pad(self.conv_input(x), (self.span, 0))  # (B, C, span + T): zeros before the text
        return self.mix(x, h)


class GatedConvLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = vocab.VocabEmbedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(GatedConvBlock(cfg, cfg.dilation_growth ** i)
                                    for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = vocab.VocabHead(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.02)
        if not cfg.tie_embeddings:
            nn.init.normal_(self.head.weight, mean=0.0, std=0.02)
        self.activation_checkpointing = False  # train.activation_checkpointing sets it
        vocab.pad_parameters(self, cfg.vocab_size)  # after init: the same draws as unpadded

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab); any T (outputs see receptive_field)."""
        x = self.drop(self.embed(idx))  # (B, T, C)
        x = run_blocks(self.blocks, x, self.activation_checkpointing and self.training)
        return self.head(self.ln_f(x))

    def flops_per_token(self) -> float:
        """6N: every weight takes part once per token, forward and backward (no attention)."""
        return 6 * sum(p.numel() for p in self.parameters())

    def decoder(self, seq_len: int) -> "ConvDecoder":
        return ConvDecoder(self, seq_len)


class ConvDecoder:
    """Incremental decoding (hvdlm/models/decoding.py's interface): `start(ids)` reads B prompts
    (B, T) (their last seq_len tokens) and keeps, per block, the conv's last `span` inputs;
    `push(tokens)` runs one column (B,) through the blocks. Each returns the next tokens'
    logits (B, vocab)."""

    def __init__(self, model: GatedConvLM, seq_len: int):
        self.model, self.seq_len = model, seq_len
        self.past: list[torch.Tensor] = []  # per block: (B, C, span) conv inputs

    def _device(self) -> torch.device:
        return self.model.embed.weight.device

    @torch.no_grad()
    def start(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.drop(m.embed(ids[:, -self.seq_len:].to(self._device())))  # (B, T, C)
        self.past = []
        for block in m.blocks:
            h = F.pad(block.conv_input(x), (block.span, 0))       # (B, C, span + T)
            self.past.append(h[:, :, h.size(2) - block.span:])    # the last span columns
            x = block.mix(x, h)
        return m.head(m.ln_f(x[:, -1]))

    @torch.no_grad()
    def push(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.drop(m.embed(tokens.to(self._device())[:, None]))  # (B, 1, C)
        for i, block in enumerate(m.blocks):
            h = torch.cat([self.past[i], block.conv_input(x)], dim=2)  # (B, C, span + 1)
            self.past[i] = h[:, :, 1:]
            x = block.mix(x, h)                                         # one output column
        return m.head(m.ln_f(x[:, -1]))
