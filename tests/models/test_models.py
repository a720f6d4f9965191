"""Models: shapes, causality, initialisation, weight tying; pure PyTorch (no Horovod)."""
import ast
import math
import re

import pytest
import torch

from hvdlm.config import ModelConfig
from hvdlm.models import build_model, count_parameters
from tests.conftest import ROOT


def tiny(arch: str, **kw) -> ModelConfig:
    return ModelConfig(arch=arch, n_layer=2, n_head=2, n_embd=16, seq_len=12, vocab_size=50, **kw)


@pytest.mark.parametrize("arch", ["gpt", "lstm", "gru", "rnn", "cnn"])
def test_logits_shape_and_causality(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch)).eval()
    idx = torch.randint(0, 50, (3, 12))
    logits = model(idx)
    assert logits.shape == (3, 12, 50)
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 50
    # Changing future tokens must not change earlier predictions.
    assert torch.allclose(model(changed)[:, :8], logits[:, :8], atol=1e-6)
    assert not torch.allclose(model(changed)[:, 8:], logits[:, 8:])


@pytest.mark.parametrize("arch", ["gpt", "lstm", "cnn"])
def test_tied_embeddings_share_one_tensor(arch):
    tied, untied = build_model(tiny(arch)), build_model(tiny(arch, tie_embeddings=False))
    assert count_parameters(untied) - count_parameters(tied) == 64 * 16  # 50 rows padded to 64


def test_gpt_init_scales_residual_projections():
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=8, n_head=4, n_embd=256, seq_len=16, vocab_size=100))
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0


def test_gpt_rejects_too_long_input():
    with pytest.raises(ValueError, match="seq_len"):
        build_model(tiny("gpt"))(torch.zeros(1, 13, dtype=torch.long))


def test_models_do_not_import_horovod_or_slurm():
    for path in (ROOT / "hvdlm" / "models").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(n.split(".")[0] in ("horovod", "submitit") for n in names), path


def test_only_distributed_imports_horovod():
    importing = re.compile(r"^\s*(import|from) horovod\b", re.MULTILINE)
    importers = [p.name for p in (ROOT / "hvdlm").rglob("*.py") if importing.search(p.read_text())]
    # distributed.py for training; the launcher side starts Horovod's rendezvous server.
    assert set(importers) <= {"distributed.py", "launch.py", "hostlist.py", "rendezvous.py"}, importers
