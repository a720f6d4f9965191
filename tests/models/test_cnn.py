"""The gated convolutional LM (hvdlm/models/cnn.py): causal with exactly its receptive field,
its decoder's cache equals recomputing the window and costs one column per token, its config
keys are checked in one line.

    .venv/bin/python -m pytest tests/models/test_cnn.py
"""
import pytest
import torch

from hvdlm.config import ModelConfig, load_config, receptive_field
from hvdlm.errors import UsageError
from hvdlm.models import build_model, count_parameters
from hvdlm.models.cnn import ConvDecoder
from hvdlm.models.decoding import DecodeOptions, WindowDecoder, continue_text, decoder_for
from hvdlm.training import checkpoint
from hvdlm.training.init_from import initial_weights

VOCAB = 40


def cnn(seq_len=24, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = dict(arch="cnn", n_layer=3, n_embd=16, seq_len=seq_len, kernel_size=3,
               dilation_growth=2, vocab_size=VOCAB)
    return build_model(ModelConfig(**{**cfg, **kw})).eval()


def test_each_output_depends_on_exactly_its_receptive_field():
    model = cnn()
    field = receptive_field(model.cfg)
    assert field == 1 + 2 * (1 + 2 + 4)  # kernel 3, dilations 1, 2, 4
    idx = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = model(idx)
        for j in range(24):  # change token j alone
            changed = idx.clone()
            changed[:, j] = (changed[:, j] + 1) % VOCAB
            moved = (model(changed) - base).abs().amax(dim=(0, 2))  # per position
            assert torch.all(moved[:j] == 0), j                     # the past: untouched
            assert torch.all(moved[j:j + field] > 0), j             # what it can see: moved
            assert torch.all(moved[j + field:] == 0), j             # beyond the field: untouched


def test_cached_decoder_equals_recomputing_the_window():
    # float64, so that "equal" can be tight; receptive field 15, one less than seq_len
    model = cnn(seq_len=16).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)  # sharper predictions than the initialisation's near-uniform ones
    cached, window = decoder_for(model, 16), WindowDecoder(model, 16)
    assert isinstance(cached, ConvDecoder)
    prompt = torch.tensor([list(range(1, 21))])  # longer than seq_len: both read its last 16
    a, b = cached.start(prompt), window.start(prompt)
    gen = torch.Generator().manual_seed(0)
    for step in range(60):  # far past seq_len, where the window slides
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), step
        token = torch.multinomial(torch.softmax(a, -1), 1, generator=gen)[:, 0]
        a, b = cached.push(token), window.push(token)
    options = DecodeOptions(max_new_tokens=50, temperature=1.0)
    runs = [continue_text(model, [3, 1, 4], options, seq_len=16, cached=cached,
                          generator=torch.Generator().manual_seed(5)).tokens
            for cached in (True, False)]
    assert runs[0] == runs[1] and len(runs[0]) == 50


def test_a_new_token_costs_one_column_per_layer():
    model = cnn()
    seen = []
    for block in model.blocks:
        block.conv.register_forward_hook(
            lambda mod, inp, out, span=block.span: seen.append((inp[0].shape[-1] - span,
                                                                out.shape[-1])))
    decoder = decoder_for(model, 24)
    decoder.start(torch.arange(30)[None])
    assert seen == [(24, 24)] * 3  # the prompt's window, once
    seen.clear()
    for token in range(100):  # however long the text grows
        decoder.push(torch.tensor([token % VOCAB]))
    assert seen == [(1, 1)] * 300  # one new column in, one out, in each of the 3 layers


def test_tied_embeddings_and_parameter_count():
    tied, untied = cnn(), cnn(tie_embeddings=False)
    assert count_parameters(untied) - count_parameters(tied) == VOCAB * 16
    # embedding + per layer LayerNorm (2C) and conv C -> 2C, kernel 3 (+ bias) + final LayerNorm
    assert count_parameters(tied) == VOCAB * 16 + 3 * (2 * 16 + 16 * 32 * 3 + 32) + 2 * 16


@pytest.mark.parametrize("overrides, key", [
    (["model.n_layer=6"], "model.kernel_size"),             # 1 + 3 x 63 = 190 > 128
    (["model.kernel_size=0"], "model.kernel_size"),
    (["model.dilation_growth=0"], "model.dilation_growth"),
])
def test_bad_cnn_shapes_are_one_line_naming_the_key(overrides, key):
    with pytest.raises(UsageError) as err:
        load_config(None, ["model.arch=cnn", *overrides])
    message = str(err.value)
    assert message.startswith(f"config key {key}") and "\n" not in message
    if "n_layer" in overrides[0]:
        assert "sees 190 tokens, more than model.seq_len (128)" in message


def test_the_receptive_field_limit_is_only_for_cnn_and_fits_exactly():
    load_config(None, ["model.arch=gpt", "model.n_layer=6"])  # no kernel: nothing to check
    fits = load_config(None, ["model.arch=cnn", "model.n_layer=6", "model.dilation_growth=1",
                              "model.kernel_size=3", "model.seq_len=13"])
    assert receptive_field(fits.model) == 13
    with pytest.raises(UsageError):
        load_config(None, ["model.arch=cnn", "model.n_layer=6", "model.dilation_growth=1",
                           "model.kernel_size=3", "model.seq_len=12"])


def test_init_from_refuses_a_cnn_checkpoint_of_another_dilation(tmp_path):
    """The same tensors, another model: train.init_from names the key that differs."""
    model = cnn()
    cfg = load_config(None, ["model.arch=cnn", "model.n_layer=3", "model.n_embd=16",
                             "model.seq_len=24", "model.kernel_size=3"])
    cfg.model.vocab_size = VOCAB
    path = checkpoint.save(tmp_path, checkpoint.TrainingState(
        model=model.state_dict(), optimizer={}, step=1, consumed_samples=0,
        config=cfg.to_dict()), keep=1)
    assert initial_weights(path, cfg.model).keys() == model.state_dict().keys()
    cfg.model.dilation_growth = 1
    with pytest.raises(UsageError, match="model.dilation_growth is 2 there, 1 here"):
        initial_weights(path, cfg.model)
