"""The Llama-style model (hvdlm/models/llama.py): shapes and parameter count, grouped-query
attention, causal rotary attention, the key/value cache against recomputing the window, and
the config checks of its keys.

    .venv/bin/python -m pytest tests/models/test_llama.py
"""
import pytest
import torch

from hvdlm.config import Config, ModelConfig, load_config
from hvdlm.errors import UsageError
from hvdlm.models import build_model, count_parameters
from hvdlm.models.decoding import (DecodeOptions, WindowDecoder, continue_batch, decoder_for)
from hvdlm.models.llama import Llama, LlamaDecoder, Rotary, ffn_hidden
from hvdlm.training.estimate import count

VOCAB, SEQ = 40, 16


def llama(**shape) -> Llama:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"arch": "llama", "n_layer": 2, "n_head": 4, "n_kv_head": 2,
                         "n_embd": 32, "seq_len": SEQ, "vocab_size": VOCAB, **shape})
    model = build_model(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)  # sharper predictions than the initialisation's near-uniform ones
    return model


def test_parameter_count_is_the_formula_and_print_configs():
    h, hidden, kv = 32, ffn_hidden(ModelConfig(n_embd=32)), 2 * 8  # 2 kv heads of size 8
    assert hidden == 128  # 8 x 32 / 3 = 85.3, rounded up to a multiple of 64
    per_layer = h * h * 2 + 2 * h * kv + 3 * h * hidden + 2 * h  # q, o; k, v; SwiGLU; 2 norms
    tied = VOCAB * h + 2 * per_layer + h  # the vocabulary's padding rows not counted
    assert count_parameters(llama()) == tied
    assert count_parameters(llama(tie_embeddings=False)) == tied + VOCAB * h
    assert llama().embed.weight.shape == (64, h)  # padded to a multiple of 64 all the same
    cfg = Config(model=ModelConfig(arch="llama", n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                                   seq_len=SEQ, vocab_size=VOCAB))
    assert count(cfg) == tied  # --print-config's count, on the meta device
    assert ffn_hidden(ModelConfig(n_embd=32, ffn_hidden=96)) == 96


def test_grouped_query_attention_has_fewer_key_value_heads():
    attn = llama().blocks[0].attn
    assert attn.q.weight.shape == (32, 32) and attn.k.weight.shape == (16, 32)
    assert all(m.bias is None for m in llama().modules() if isinstance(m, torch.nn.Linear))
    # n_kv_head = n_head is plain multi-head attention; 1 is multi-query.
    assert llama(n_kv_head=0).blocks[0].attn.k.weight.shape == (32, 32)
    assert llama(n_kv_head=1).blocks[0].attn.v.weight.shape == (8, 32)


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_rotary_attention_is_causal(n_kv_head):
    model = llama(n_kv_head=n_kv_head)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[:, 9] = (changed[:, 9] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[:, :9], b[:, :9])  # no earlier output sees a later token
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_rotary_scores_depend_on_the_distance_only_and_order_matters():
    rotary = Rotary(8, 32, 10000.0).double()
    q, k = torch.randn(2, 1, 1, 8, dtype=torch.float64).unbind(0)
    def score(i, j):  # query at position i, key at position j
        return (rotary(q, i) * rotary(k, j)).sum().item()
    assert score(7, 3) == pytest.approx(score(20, 16), rel=1e-5)  # fp32 angles
    assert score(7, 3) != pytest.approx(score(7, 4), rel=1e-2)
    model = llama()  # no learned positions, yet the order of the tokens changes the output
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert not torch.allclose(model(ids)[0, -1], model(ids.flip(1))[0, -1])


def test_cached_decoder_equals_recomputing_the_window():
    model = llama()
    cached, window = decoder_for(model, SEQ), WindowDecoder(model, SEQ)
    assert isinstance(cached, LlamaDecoder)
    gen = torch.Generator().manual_seed(0)
    for prompt in ([3, 1, 4], list(range(1, 21))):  # shorter and longer than the window
        ids = torch.tensor([prompt, [(t * 7 + 2) % VOCAB for t in prompt]])
        a, b = cached.start(ids), window.start(ids)
        for step in range(3 * SEQ):  # far past a full window, where it slides
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), (prompt[:3], step)
            tokens = torch.multinomial(torch.softmax(a, -1), 1, generator=gen)[:, 0]
            a, b = cached.push(tokens), window.push(tokens)
    options = DecodeOptions(max_new_tokens=2 * SEQ, temperature=1.0)
    prompts = torch.tensor([[3, 1, 4], [9, 9, 9]])
    rows = [[r.tokens for r in continue_batch(model, prompts, options, seq_len=SEQ,
                                              generator=torch.Generator().manual_seed(2),
                                              cached=cached)] for cached in (True, False)]
    assert rows[0] == rows[1]


def test_activation_checkpointing_gives_the_same_gradients():
    model = llama().float().train()
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(3))
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.activation_checkpointing = recompute
        torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1),
                                          ids[:, 1:].flatten()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("override, key", [
    (["model.n_kv_head=3"], "model.n_kv_head"),
    (["model.n_kv_head=8"], "model.n_kv_head"),
    (["model.rope_theta=0"], "model.rope_theta"),
    (["model.ffn_hidden=-1"], "model.ffn_hidden"),
    (["model.n_embd=36", "model.n_head=12"], "model.n_embd"),  # head size 3: odd
])
def test_config_refuses_llama_shapes_that_cannot_be_built(override, key):
    with pytest.raises(UsageError, match=key):
        load_config(None, ["model.arch=llama", "model.n_head=4", *override])


def test_explain_sees_the_llamas_attention_and_logit_lens():
    """hvdlm.explain's attention maps (recomputed explicitly: rotated, shared key/value heads)
    give the fused kernel's outputs, and the lens after the last block is the logits."""
    from hvdlm.explain import transformer
    model = llama().float()
    ids = torch.randint(0, VOCAB, (1, SEQ), generator=torch.Generator().manual_seed(4))
    tr = transformer.trace(model, ids)
    assert len(tr.attention) == 2 and tr.attention[0].shape == (4, SEQ, SEQ)
    assert tr.fused_error < 1e-4
    assert torch.allclose(tr.attention[0].sum(-1), torch.ones(4, SEQ))
    assert torch.equal(tr.attention[0].triu(1), torch.zeros(4, SEQ, SEQ))  # causal
    lens = transformer.logit_lens(model, tr.residuals, ids[0].roll(-1), tr.logits)
    assert lens["last_layer_max_error"] < 1e-4
