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
    assert count_parameters(untied) - count_parameters(tied) == 50 * 16


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


# -- the padded vocabulary (models/vocab.py) and activation checkpointing --------------------

def loud_padding(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with its padded head rows (ids 50..63) set to win any argmax or draw, were they
    ever read (tied models share them with the embedding)."""
    with torch.no_grad():
        model.head.weight[50:] = 100.0
        if model.head.bias is not None:
            model.head.bias[50:] = 1e4
    return model


@pytest.mark.parametrize("arch", ["gpt", "lstm", "cnn"])
def test_padded_ids_are_never_predicted_sampled_or_counted(arch):
    from hvdlm.models.decoding import DecodeOptions, continue_text
    from hvdlm.training.scoring import window_loss
    torch.manual_seed(0)
    model = loud_padding(build_model(tiny(arch))).eval()
    assert model.head.weight.shape[0] == 64 and model.head.weight.shape[0] % 64 == 0
    window = torch.randint(0, 50, (3, 13))
    loss, logits, y = window_loss(model, window)
    assert logits.shape == (3, 12, 50)
    assert loss.item() < 10  # an id 50..63 in the softmax would make it ~100s of nats
    out = continue_text(model, [1, 2, 3], DecodeOptions(max_new_tokens=40, temperature=1.5),
                        seq_len=12, generator=torch.Generator().manual_seed(0))
    assert len(out.tokens) == 40 and max(out.tokens) < 50


@pytest.mark.parametrize("arch", ["gpt", "lstm", "cnn"])
def test_a_checkpoint_from_before_padding_still_loads(arch):
    torch.manual_seed(0)
    model = build_model(tiny(arch, tie_embeddings=False)).eval()
    vocab_rows = {"wte.weight", "embed.weight", "head.weight", "head.bias"}
    old = {k: v[:50] if k in vocab_rows else v for k, v in model.state_dict().items()}
    again = build_model(tiny(arch, tie_embeddings=False)).eval()
    again.load_state_dict(old)
    idx = torch.randint(0, 50, (2, 12))
    assert torch.equal(again(idx), model(idx))


def test_export_strips_the_padding_and_keeps_the_logits():
    from hvdlm.models.gpt2_format import from_gpt2, to_gpt2
    torch.manual_seed(0)
    for tied in (True, False):
        cfg = tiny("gpt", tie_embeddings=tied)
        model = build_model(cfg).eval()
        config, tensors = to_gpt2(cfg, model.state_dict(), eos_id=0)
        assert config["vocab_size"] == 50 and tensors["transformer.wte.weight"].shape[0] == 50
        assert tied or tensors["lm_head.weight"].shape[0] == 50
        back = build_model(cfg).eval()
        back.load_state_dict(from_gpt2(cfg, tensors))
        idx = torch.randint(0, 50, (2, 12))
        assert torch.equal(back(idx), model(idx))


@pytest.mark.parametrize("arch", ["gpt", "cnn"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(arch):
    from hvdlm.training.scoring import window_loss
    window = torch.randint(0, 50, (4, 13), generator=torch.Generator().manual_seed(1))
    results = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny(arch, dropout=0.2)).train()  # dropout: masks must replay
        model.activation_checkpointing = recompute
        torch.manual_seed(5)
        loss, _, _ = window_loss(model, window)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (plain, plain_grads), (recomputed, grads) = results
    assert torch.equal(plain, recomputed)
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, grads[name], rtol=0, atol=1e-7), name


def test_print_configs_estimate_shows_what_activation_checkpointing_saves():
    from hvdlm.config import Config, TrainConfig
    from hvdlm.training.estimate import activation_bytes, describe
    model = ModelConfig(n_layer=12, n_head=12, n_embd=768, seq_len=1024, vocab_size=50257)
    plain = Config(model, TrainConfig(micro_batch=8, precision="bf16"))
    recomputed = Config(model, TrainConfig(micro_batch=8, precision="bf16",
                                           activation_checkpointing=True))
    saved = activation_bytes(plain) - activation_bytes(recomputed)
    assert saved > activation_bytes(recomputed) / 2  # the blocks' insides, all but one
    assert "activation checkpointing saves" not in describe(plain, 1, "given")
    assert f"(activation checkpointing saves ~{saved / 2**30:.2f} GiB)" in \
        describe(recomputed, 1, "given")
