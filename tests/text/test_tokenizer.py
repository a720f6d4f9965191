"""hvdlm.tokenizer: byte and BPE tokenizers are lossless, loadable, and measure bytes exactly."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer

from hvdlm.errors import DataError
from hvdlm.text.tokenizer import (EOS, Tokenizer, build_byte_tokenizer, hf_to_json_bytes,
                                  load_tokenizer, train_bpe)

SAMPLES = ["Hello, world!\n", "café 日本語 🎉 \ufffd", "  leading\tand trailing  \n\n",
           f"the special {EOS} string stays text", "def f(x):\n    return x ** 2\n", "a"]
TRAIN = [f"def function_{i}(value):\n    return value * {i} + {i * i}  # café\n"
         for i in range(200)] + SAMPLES * 5


@pytest.fixture(scope="module")
def byte_tok() -> Tokenizer:
    return Tokenizer(hf_to_json_bytes(build_byte_tokenizer()))


@pytest.fixture(scope="module")
def bpe_tok() -> Tokenizer:
    return Tokenizer(hf_to_json_bytes(train_bpe(TRAIN, 300, length=len(TRAIN))))


def test_byte_tokenizer_shape(byte_tok):
    assert (byte_tok.vocab_size, byte_tok.eos_id, byte_tok.is_byte) == (257, 256, True)
    assert byte_tok.encode("é") == [0xC3, 0xA9]
    assert (byte_tok.token_byte_lengths() == np.array([1] * 256 + [0])).all()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_tokenizer_lossless_and_same_as_hf(text):
    tok = Tokenizer(hf_to_json_bytes(build_byte_tokenizer()))
    ids = tok.encode(text.encode("utf-8", "replace").decode("utf-8"))
    hf = HFTokenizer.from_str(hf_to_json_bytes(build_byte_tokenizer()).decode())
    hf.encode_special_tokens = True  # as load_tokenizer does
    clean = text.encode("utf-8", "replace").decode("utf-8")
    assert tok.decode(ids) == clean
    assert hf.encode(clean, add_special_tokens=False).ids == ids  # the file means the same


def test_byte_decode_of_broken_utf8_replaces(byte_tok):
    assert byte_tok.decode([0x61, 0xC3, 256, 0x62]) == "a\ufffdb"


@pytest.mark.parametrize("which", ["byte_tok", "bpe_tok"])
def test_roundtrip_and_byte_lengths(which, request):
    tok: Tokenizer = request.getfixturevalue(which)
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (tok.vocab_size,) and lengths[tok.eos_id] == 0
    for text in SAMPLES + TRAIN[:20]:
        ids = tok.encode(text)
        assert tok.eos_id not in ids  # end-of-text string in text is not the special token
        assert tok.decode(ids) == text
        assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]


@pytest.mark.parametrize("which", ["byte_tok", "bpe_tok"])
def test_encode_docs_appends_eos(which, request):
    tok: Tokenizer = request.getfixturevalue(which)
    flat, lengths = tok.encode_docs(SAMPLES)
    ends = np.cumsum(lengths)
    assert (flat[ends - 1] == tok.eos_id).all() and ends[-1] == len(flat)
    for text, end, n in zip(SAMPLES, ends, lengths):
        assert flat[end - n:end - 1].tolist() == tok.encode(text)


def test_bpe_training_is_deterministic_and_sized(bpe_tok):
    again = Tokenizer(hf_to_json_bytes(train_bpe(TRAIN, 300, length=len(TRAIN))))
    assert again.sha256 == bpe_tok.sha256
    assert bpe_tok.vocab_size == 300 and not bpe_tok.is_byte
    assert len(bpe_tok.encode(TRAIN[0])) < len(TRAIN[0].encode())  # merges happened


def test_load_tokenizer_file_and_sha(tmp_path, bpe_tok):
    path = tmp_path / "tokenizer.json"
    data = hf_to_json_bytes(bpe_tok.hf())
    path.write_bytes(data)
    tok = load_tokenizer(path)
    assert tok.sha256 == hashlib.sha256(data).hexdigest()
    assert (tok.vocab_size, tok.eos_id) == (bpe_tok.vocab_size, bpe_tok.eos_id)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="missing.json: cannot read"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(DataError, match="junk.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "junk.json")
    spec = json.loads(hf_to_json_bytes(build_byte_tokenizer()))
    spec["added_tokens"] = []
    (tmp_path / "noeos.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match="noeos.json: no end-of-text"):
        load_tokenizer(tmp_path / "noeos.json")


def _byte_spec_with(**changes) -> bytes:
    return json.dumps({**json.loads(hf_to_json_bytes(build_byte_tokenizer())), **changes}).encode()


@pytest.mark.parametrize("content", [
    b"\xff\xfe", b"[]", b"{}", b'{"model": 3}', _byte_spec_with(added_tokens="x"),
    _byte_spec_with(added_tokens=[{"id": 256}]), _byte_spec_with(model={"type": 5})])
def test_malformed_tokenizer_json_is_a_data_error(tmp_path, content):
    """Not JSON, JSON without the expected keys, keys of the wrong type: one clear line."""
    (tmp_path / "bad.json").write_bytes(content)
    with pytest.raises(DataError, match=r"bad.json: not a valid tokenizer.json \([^\n]*\)$"):
        load_tokenizer(tmp_path / "bad.json")
