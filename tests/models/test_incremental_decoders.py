"""GPT's key/value cache and the recurrent models' carried state (hvdlm/models/gpt.py, rnn.py):
the logits equal recomputing the window at every token, for a batch of texts too, also once the
window is full and slides, and while the window fills a new token costs one position, not the
window again. A batch through continue_batch gives each row what it gives alone (greedy) and
what recomputing gives (any temperature, every model); rows end on their own.

    .venv/bin/python -m pytest tests/models/test_incremental_decoders.py
"""
import pytest
import torch

from hvdlm.config import ModelConfig
from hvdlm.models import build_model
from hvdlm.models.decoding import (DecodeOptions, FillingWindowDecoder, WindowDecoder,
                                   continue_batch, continue_text, decoder_for)

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
        ids = torch.tensor([prompt, [(t * 7 + 2) % VOCAB for t in prompt]])  # a batch of two
        a, b = cached.start(ids), window.start(ids)
        for step in range(3 * SEQ):  # far past a full window, where it slides
            assert a.shape == (2, VOCAB)
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), (prompt[:3], step)
            tokens = torch.multinomial(torch.softmax(a, -1), 1, generator=gen)[:, 0]
            a, b = cached.push(tokens), window.push(tokens)
    options = DecodeOptions(max_new_tokens=40, temperature=1.0)
    runs = [continue_text(model, [3, 1, 4], options, seq_len=SEQ, cached=cached,
                          generator=torch.Generator().manual_seed(5)).tokens
            for cached in (True, False)]
    assert runs[0] == runs[1] and len(runs[0]) == 40


@pytest.mark.parametrize("arch", ARCHES + ["cnn"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_batch_decodes_each_row_as_alone_and_as_recomputing(arch, temperature):
    model = model_of(arch)
    prompts = torch.tensor([[3, 1, 4], [9, 9, 9], [0, 5, 2]])
    options = DecodeOptions(max_new_tokens=2 * SEQ, temperature=temperature, top_k=10)
    batch = [[r.tokens for r in continue_batch(model, prompts, options, seq_len=SEQ,
                                               generator=torch.Generator().manual_seed(1),
                                               cached=cached)] for cached in (True, False)]
    assert batch[0] == batch[1] and all(len(r) == 2 * SEQ for r in batch[0])
    if temperature == 0:  # greedy: a row's tokens do not depend on the others
        assert batch[0] == [continue_text(model, p, options, seq_len=SEQ).tokens
                            for p in prompts.tolist()]
    else:
        assert len({tuple(r) for r in batch[0]}) == 3


def test_rows_of_a_batch_end_on_their_own():
    model = model_of("gpt")
    prompts = torch.tensor([[3, 1, 4], [9, 9, 9]])
    options = DecodeOptions(max_new_tokens=12, temperature=1.0)

    def rows(**kw):  # ended rows are still drawn for: the others see the same draws
        return continue_batch(model, prompts, options, seq_len=SEQ,
                              generator=torch.Generator().manual_seed(3), **kw)
    free = [r.tokens for r in rows()]
    at = next(i for i in range(2, 12) if free[0][i] not in free[0][:i])
    eos = free[0][at]
    ended = rows(eos_id=eos)
    assert ended[0].tokens == free[0][:at] and ended[0].reason == "eos"
    cut = free[1].index(eos) if eos in free[1] else len(free[1])
    assert ended[1].tokens == free[1][:cut]
    assert ended[1].reason == ("eos" if cut < len(free[1]) else "length")


@pytest.mark.parametrize("arch", ARCHES)
def test_while_the_window_fills_a_token_costs_one_position(arch):
    model = model_of(arch)
    lengths = []  # positions each forward step reads
    first = model.blocks[0].attn.qkv if arch == "gpt" else model.rnn
    first.register_forward_hook(lambda mod, inp, out: lengths.append(inp[0].shape[1]))
    decoder = decoder_for(model, SEQ)
    decoder.start(torch.tensor([[1, 2, 3, 4]]))
    for token in range(SEQ - 4):  # the window is full after these
        decoder.push(torch.tensor([token]))
    assert lengths == [4] + [1] * (SEQ - 4)
    lengths.clear()
    decoder.push(torch.tensor([7]))  # the full window slides: read again, whole
    assert lengths == [SEQ]
