"""Controlled decoding (hvdlm/models/decoding.py) with hand-made models whose next token is
known: banned strings inside and across tokens and at the prompt's end, every token banned, stop
strings, each row of a batch with its own, top-p, the repetition penalty, the time limit, option
checks.

    .venv/bin/python -m pytest tests/models/test_decoding.py
"""
import math
import time

import pytest
import torch

from hvdlm.errors import UsageError
from hvdlm.models.decoding import (DecodeOptions, continue_batch, continue_text, nucleus,
                                   penalize_repeats)

# Tokens of several characters, so that a string can lie inside one token or span two.
PIECES = ["<s>", "ab", "cd", "bc", "e", "x", "<eos>"]
S, AB, CD, BC, E, X, EOS = range(len(PIECES))


def detokenize(ids):
    return "".join(PIECES[t] for t in ids)


class Table(torch.nn.Module):
    """A bigram model: the logits of the next token are `table[last token]`."""

    def __init__(self, table: dict[int, dict[int, float]]):
        super().__init__()
        self.rows = torch.full((len(PIECES), len(PIECES)), -10.0)
        for last, nxt in table.items():
            for token, logit in nxt.items():
                self.rows[last, token] = logit

    def forward(self, idx):
        return self.rows[idx]  # (B, T, vocab)


def run(model, options, ids=(S,), **kw):
    kw = {"seq_len": 8, "eos_id": EOS, "detokenize": detokenize, **kw}
    return continue_text(model, list(ids), options, **kw)


# <s> -> ab -> cd -> x -> <eos>; "bc" and "e" are the runners-up.
CHAIN = Table({S: {AB: 20, BC: 12}, AB: {CD: 20, E: 12}, CD: {X: 20}, X: {EOS: 20},
               E: {X: 20}, BC: {X: 20}})


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_banned_string_never_appears_even_across_tokens(temperature):
    options = DecodeOptions(max_new_tokens=10, temperature=temperature)
    gen = torch.Generator().manual_seed(0)
    assert run(CHAIN, options, generator=gen).text == "abcdx"  # "bc" spans "ab" + "cd"
    banned = run(CHAIN, DecodeOptions(max_new_tokens=10, temperature=temperature, ban=("bc",)),
                 generator=gen)
    assert banned.text == "abex" and banned.reason == "eos"  # cd (spanning) refused, then e


def test_a_token_holding_a_banned_string_is_refused_and_so_is_the_prompts_end():
    prefer_bc = Table({S: {BC: 9, AB: 5}, AB: {X: 9}, BC: {X: 9}, X: {EOS: 9}})
    assert run(prefer_bc, DecodeOptions(temperature=0)).text == "bcx"
    assert run(prefer_bc, DecodeOptions(temperature=0, ban=("bc",))).text == "abx"
    # The prompt ends in "b": its continuation may not start with "c"...
    out = run(CHAIN, DecodeOptions(temperature=0, ban=("bcd",)), ids=[S, AB], prompt="<s>ab")
    assert out.text == "ex"
    # ...but a banned string inside the prompt alone is the user's, not generated.
    out = run(CHAIN, DecodeOptions(temperature=0, ban=("ab",)), ids=[S, AB], prompt="<s>ab")
    assert out.text == "cdx"


def test_when_every_token_is_banned_decoding_ends():
    only_ab = Table({S: {AB: 9}, AB: {AB: 9}})
    out = run(only_ab, DecodeOptions(temperature=1.0, ban=("a", "b", "c", "d", "e", "x", "<")),
              eos_id=None)
    assert out.tokens == [] and out.reason == "banned"
    # With end-of-text never banned, the model may still end the text properly.
    out = run(only_ab, DecodeOptions(temperature=0, ban=("ab",)))
    assert out.reason in ("eos", "length") and "ab" not in out.text


def test_the_output_ends_before_the_first_stop_string():
    options = DecodeOptions(max_new_tokens=10, temperature=0, stop=("dx", "bcd"))
    out = run(CHAIN, options)
    assert out.text == "a" and out.reason == "stop"  # "bcd" (spanning) comes first
    assert out.tokens == [AB, CD]  # drawn until the stop string was complete
    assert run(CHAIN, DecodeOptions(temperature=0, stop=("dx",))).text == "abc"
    assert run(CHAIN, DecodeOptions(temperature=0, stop=("zz",))).reason == "eos"


@pytest.mark.parametrize("options", [
    DecodeOptions(temperature=0, ban=("bc",)), DecodeOptions(temperature=0, stop=("dx",)),
    DecodeOptions(temperature=0, repetition_penalty=3.0),
    DecodeOptions(temperature=0, ban=("a", "b", "c", "d", "e", "x", "<"))])
def test_in_a_batch_each_row_gets_its_own_text_controls(options):
    prompts = [[AB, AB], [S, S], [S, E]]
    batch = continue_batch(CHAIN, torch.tensor(prompts), options, seq_len=8, eos_id=EOS,
                           detokenize=detokenize)
    alone = [run(CHAIN, options, ids=p) for p in prompts]
    assert [(r.text, r.tokens, r.reason) for r in batch] == \
        [(r.text, r.tokens, r.reason) for r in alone]


class Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, idx):
        return self.logits.expand(*idx.shape, len(self.logits))


def test_top_p_keeps_the_fewest_likeliest_tokens_reaching_p():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    p4, p3 = torch.softmax(logits, -1)[[4, 3]].tolist()  # 0.64, 0.24

    def kept(p):
        return set(torch.nonzero(nucleus(logits, p) > -math.inf).flatten().tolist())
    assert kept(1e-9) == kept(p4 - 1e-4) == {4}
    assert kept(p4 + 1e-4) == kept(p4 + p3 - 1e-4) == {3, 4}
    assert kept(p4 + p3 + 1e-4) == {2, 3, 4}
    assert kept(1.0) == {0, 1, 2, 3, 4}
    model = Fixed([0.0, 1.0, 2.0, 3.0, 4.0])
    drawn = set(run(model, DecodeOptions(max_new_tokens=300, temperature=5.0, top_p=0.7),
                    eos_id=None, generator=torch.Generator().manual_seed(0)).tokens)
    # At temperature 5 the probabilities are 0.29, 0.23, 0.19, 0.16, 0.13: three reach 0.7.
    assert drawn == {2, 3, 4}


def test_top_p_towards_zero_is_greedy():
    torch.manual_seed(0)
    model = Fixed(torch.randn(len(PIECES)).tolist())
    greedy = run(model, DecodeOptions(max_new_tokens=20, temperature=0), eos_id=None)
    for seed in range(3):
        near_zero = run(model, DecodeOptions(max_new_tokens=20, temperature=2.0, top_p=1e-9),
                        eos_id=None, generator=torch.Generator().manual_seed(seed))
        assert near_zero.tokens == greedy.tokens


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    seen = torch.tensor([True, False, True, True])
    got = penalize_repeats(torch.tensor([3.0, 3.0, -1.0, 0.0]), seen, 1.5)
    assert got.tolist() == [2.0, 3.0, -1.5, 0.0]
    # Greedy: 4 (2.5) beats 3 (2.0) until 4 is in the text (2.5 / 1.5 = 1.67); then 3, once.
    model = Fixed([0.0, -1.0, 0.5, 2.0, 2.5])
    plain = run(model, DecodeOptions(max_new_tokens=5, temperature=0), ids=[0], eos_id=None)
    assert plain.tokens == [4, 4, 4, 4, 4]
    penalized = run(model, DecodeOptions(max_new_tokens=5, temperature=0, repetition_penalty=1.5),
                    ids=[0], eos_id=None)
    assert penalized.tokens == [4, 3, 4, 4, 4]


def test_max_time_ends_decoding():
    class Slow(Fixed):
        def forward(self, idx):
            time.sleep(0.05)
            return super().forward(idx)
    started = time.monotonic()
    out = run(Slow([1.0, 2.0]), DecodeOptions(max_new_tokens=1000, max_time=0.3), eos_id=None,
              detokenize=None)
    assert out.reason == "time" and 1 <= len(out.tokens) <= 8
    assert time.monotonic() - started < 5.0  # a hang guard: ~0.35 s typical, 1000 tokens 50 s


@pytest.mark.parametrize("options, message", [
    (dict(top_p=0.0), "--top-p must be in (0, 1]"),
    (dict(top_p=1.5), "--top-p must be in (0, 1]"),
    (dict(top_p=float("nan")), "--top-p must be in (0, 1]"),
    (dict(repetition_penalty=0.0), "--repetition-penalty must be > 0"),
    (dict(stop=("",)), "--stop strings must not be empty"),
    (dict(ban=("ok", "")), "--ban strings must not be empty"),
    (dict(max_time=0.0), "--max-time must be > 0"),
    (dict(temperature=-1.0), "--temperature must be >= 0"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(UsageError) as err:
        DecodeOptions(**options).validate()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_text_controls_need_a_detokenizer():
    with pytest.raises(ValueError, match="detokenize"):
        continue_text(CHAIN, [S], DecodeOptions(ban=("x",)), seq_len=4)
