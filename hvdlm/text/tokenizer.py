"""Tokenizers: train a byte-level BPE (HF `tokenizers`), build the byte tokenizer, load either.

Both are saved as a standard HF `tokenizer.json`: the byte tokenizer is a byte-level BPE with
no merges whose ids are the byte values (0-255) and end-of-text 256, so any HF tool can load
it, and `load_tokenizer` recognises it and takes a fast NumPy path. Decoding a document's ids
gives back its text exactly; the end-of-text string inside a document is encoded as ordinary
text, never as the special token.

Trained by `python -m hvdlm.preprocess INPUT... --out DIR [--tokenizer bpe|byte]`.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from hvdlm import untrusted
from hvdlm.errors import DataError

EOS = "<|endoftext|>"
MAX_TOKENIZER_BYTES = 512 * untrusted.MiB  # the largest Hugging Face tokenizers are ~30 MB


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[str, ...]:
    """The printable character that byte-level BPE uses for each byte value 0-255.

    Printable Latin-1 bytes stand for themselves; the rest are moved, in byte order, to
    code points from 256 up, so every byte has a visible, unambiguous character.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in keep]
    chars = {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(moved)}
    return tuple(chars[b] for b in range(256))


def build_byte_tokenizer() -> HFTokenizer:
    """256 byte tokens (id = byte value) plus end-of-text (id 256), as an HF tokenizer."""
    vocab = {ch: b for b, ch in enumerate(byte_alphabet())}
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, length: int | None = None) -> HFTokenizer:
    """Train a byte-level BPE of at most `vocab_size` ids (end-of-text included)."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer, length=length)
    return tok


def hf_to_json_bytes(tok: HFTokenizer) -> bytes:
    return tok.to_str(pretty=True).encode("utf-8")


class Tokenizer:
    """A loaded tokenizer.json: encode/decode, end-of-text id, sha256 of the file bytes."""

    def __init__(self, data: bytes, source: str = "tokenizer.json") -> None:
        self.source = source
        self.sha256 = hashlib.sha256(data).hexdigest()
        try:
            spec = json.loads(data)
            self._hf = HFTokenizer.from_str(data.decode("utf-8"))
        except Exception as err:  # json's ValueError, or the plain Exception tokenizers raises
            raise DataError(f"{source}: not a valid tokenizer.json ({err})") from None
        # Special-token text inside a document must stay text, or decoding would lose it.
        self._hf.encode_special_tokens = True
        self.vocab_size = self._hf.get_vocab_size(with_added_tokens=True)
        special = [t for t in spec.get("added_tokens", []) if t.get("special")]
        self._special = {t["id"] for t in special}
        # End-of-text is the EOS token, or failing that the one and only special token.
        eos = [t for t in special if t["content"] == EOS] or (special if len(special) == 1 else [])
        if not eos:
            raise DataError(f"{source}: no end-of-text special token ({EOS!r})")
        self.eos_id = int(eos[0]["id"])
        self._byte_level = (spec.get("decoder") or {}).get("type") == "ByteLevel"
        model = spec.get("model") or {}
        self.is_byte = (model.get("type") == "BPE" and not model.get("merges")
                        and self.eos_id == 256 and self.vocab_size == 257
                        and model.get("vocab") == {ch: b for b, ch in enumerate(byte_alphabet())})

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no end-of-text appended."""
        if self.is_byte:
            return list(text.encode("utf-8"))
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` for many texts (HF encodes a batch on all cores)."""
        if self.is_byte:
            return [list(t.encode("utf-8")) for t in texts]
        encode = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)
        return [e.ids for e in encode(list(texts), add_special_tokens=False)]

    def encode_docs(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All texts' ids, each followed by end-of-text, concatenated (uint32), and lengths."""
        if self.is_byte:  # the ids are the UTF-8 bytes: no Python list per token
            rows = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]
        else:
            rows = self.encode_batch(texts)
        lengths = np.fromiter((len(r) + 1 for r in rows), dtype=np.int64, count=len(rows))
        out = np.full(int(lengths.sum()), self.eos_id, dtype=np.uint32)
        for row, end in zip(rows, np.cumsum(lengths).tolist()):  # end: one past its end-of-text
            out[end - 1 - len(row):end - 1] = row
        return out, lengths

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens are skipped, broken UTF-8 becomes U+FFFD."""
        ids = [int(i) for i in ids]
        if self.is_byte:
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self._hf.decode(ids, skip_special_tokens=True)

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each id contributes to decoded text (0 for special tokens), [vocab]."""
        out = np.zeros(self.vocab_size, dtype=np.int64)
        alphabet = set(byte_alphabet())
        for i in range(self.vocab_size):
            tok = self._hf.id_to_token(i)
            if i in self._special or tok is None:
                continue
            if self._byte_level and all(c in alphabet for c in tok):
                out[i] = len(tok)  # one byte-level character is exactly one byte
            else:
                out[i] = len(self._hf.decode([i]).encode("utf-8"))
        return out

    def hf(self) -> HFTokenizer:
        return self._hf

    def transformers_files(self, model_max_length: int | None = None) -> dict[str, bytes]:
        """tokenizer_config.json and special_tokens_map.json, so that transformers'
        `AutoTokenizer.from_pretrained(folder)` loads the tokenizer.json beside them and
        encodes exactly as `encode` does (end-of-text text inside a document stays text)."""
        eos = self._hf.id_to_token(self.eos_id)
        special = {"bos_token": eos, "eos_token": eos, "unk_token": eos}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **special,
                  "add_prefix_space": False, "clean_up_tokenization_spaces": False,
                  "split_special_tokens": True,
                  "model_max_length": model_max_length or 1_000_000_000}
        return {name: (json.dumps(value, indent=1) + "\n").encode() for name, value in
                (("tokenizer_config.json", config), ("special_tokens_map.json", special))}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer.json (trained BPE, byte tokenizer, or any HF one with end-of-text)."""
    data = untrusted.read_bytes(path, MAX_TOKENIZER_BYTES, "tokenizer")  # a regular file only
    return Tokenizer(data, source=str(path))
