"""Language models: pure PyTorch, no Horovod, no Slurm. `build_model(cfg)` picks one."""
from __future__ import annotations

from torch import nn

from hvdlm.config import ModelConfig
from hvdlm.models import vocab
from hvdlm.models.cnn import GatedConvLM
from hvdlm.models.gpt import GPT
from hvdlm.models.llama import Llama
from hvdlm.models.rnn import RNNLM

ARCH_CLASSES = {"gpt": GPT, "llama": Llama, "lstm": RNNLM, "gru": RNNLM, "rnn": RNNLM,
                "cnn": GatedConvLM}


def build_model(cfg: ModelConfig) -> nn.Module:
    """A model for `cfg.arch`; `cfg.vocab_size` must be set (from the dataset's manifest)."""
    if cfg.vocab_size <= 0:
        raise ValueError("ModelConfig.vocab_size must be set before building a model")
    return ARCH_CLASSES[cfg.arch](cfg)


def count_parameters(model: nn.Module) -> int:
    """Parameters, counting tied tensors once and the vocabulary's padding rows not at all."""
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a shared one once
    return total - vocab.padding_parameters(model)
