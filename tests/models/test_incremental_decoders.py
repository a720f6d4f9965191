"""GPT's key/value cache and the recurrent models' carried state (hvdlm/models/gpt.py, rnn.py):
the logits equal recomputing the window at every token, also once the window is full and slides,
and while the window fills a new token costs one position, not the window again.

    .venv/bin/python -m pytest tests/models/test_incremental_decoders.py
"""
import pytest
import torch

from hvdlm.config import ModelConfig
from hvdlm.models import build_model
from hvdlm.models.decoding import (DecodeOptions, FillingWindowDecoder, WindowDecoder,
                                   continue_text, decoder_for)

VOCAB, SEQ = 40, 16
ARCHES = ["gpt", "lstm", "gru", "rnn"]


def model_of(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, n_layer=2, n_head=2, n_embd=16, seq_len=SEQ,
                                    vocab_size=VOCAB)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)  # sharper predictions than the initialisation's near-uniform ones
    return model


@pytest.mark.parametrize("arch", ARCHES)
def test_cached_decoder_equals_recomputing_the_window(arch):
    model = model_of(arch)
    cached, window = decoder_for(model, SEQ), WindowDecoder(model, SEQ)
    assert isinstance(cached, FillingWindowDecoder)
    gen = torch.Generator().manual_seed(0)
    for prompt in ([3, 1, 4], list(range(1, 21))):  # shorter and longer than the window
        a, b = cached.start(prompt), window.start(prompt)
        for step in range(3 * SEQ):  # far past a full window, where it slides
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), (prompt[:3], step)
            token = int(torch.multinomial(torch.softmax(a, -1), 1, generator=gen))
            a, b = cached.push(token), window.push(token)
    options = DecodeOptions(max_new_tokens=40, temperature=1.0)
    runs = [continue_text(model, [3, 1, 4], options, seq_len=SEQ, cached=cached,
                          generator=torch.Generator().manual_seed(5)).tokens
            for cached in (True, False)]
    assert runs[0] == runs[1] and len(runs[0]) == 40


@pytest.mark.parametrize("arch", ARCHES)
def test_while_the_window_fills_a_token_costs_one_position(arch):
    model = model_of(arch)
    lengths = []  # positions each forward step reads
    first = model.blocks[0].attn.qkv if arch == "gpt" else model.rnn
    first.register_forward_hook(lambda mod, inp, out: lengths.append(inp[0].shape[1]))
    decoder = decoder_for(model, SEQ)
    decoder.start([1, 2, 3, 4])
    for token in range(SEQ - 4):  # the window is full after these
        decoder.push(token)
    assert lengths == [4] + [1] * (SEQ - 4)
    lengths.clear()
    decoder.push(7)  # the full window slides: read again, whole
    assert lengths == [SEQ]
