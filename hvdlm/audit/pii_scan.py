"""PII in what the model writes unprompted: S samples from end-of-text (temperature 1 and no
top-k cut unless asked),
scanned with the detector of `--redact-pii` (hvdlm/text/pii.py), and each string found looked
up verbatim in the training text: a found string that is in it was memorised, one that is
not was made up (or is common enough to be generated).
"""
from __future__ import annotations

import sys
from typing import Any

import torch
from tqdm import tqdm

from hvdlm.audit import runmodel
from hvdlm.audit.extraction import Documents
from hvdlm.text.pii import PII_KINDS, find_pii
from hvdlm.text.tokenizer import Tokenizer


def sample_texts(lm: runmodel.AuditModel, tok: Tokenizer, samples: int, length: int, seed: int,
                 temperature: float = 1.0, top_k: int = 0, batch: int = 64,
                 progress: bool = True) -> list[str]:
    """`samples` continuations of end-of-text, `length` tokens each; a sample that writes
    end-of-text goes on with a new document, so each is split there into texts."""
    generator = torch.Generator(device=lm.device).manual_seed(seed)
    texts = []
    bar = tqdm(total=samples, desc="samples", unit="sample", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    for a in range(0, samples, batch):
        n = min(batch, samples - a)
        out = runmodel.tokens_after(lm, torch.full((n, 1), lm.eos_id), length, temperature,
                                    generator, top_k)
        for row in out.tolist():
            piece: list[int] = []
            for token in row + [lm.eos_id]:
                if token == lm.eos_id:
                    if piece:
                        texts.append(tok.decode(piece))
                    piece = []
                else:
                    piece.append(token)
        bar.update(n)
    bar.close()
    return texts


def in_training(strings: set[str], docs: Documents, tok: Tokenizer) -> set[str]:
    """Those of `strings` that occur verbatim in some training document."""
    found: set[str] = set()
    tokens_of: dict = {}
    for i in range(len(docs)):
        left = strings - found
        if not left:
            break
        text = tok.decode(docs.tokens(i, tokens_of))
        found.update(s for s in left if s in text)
    return found


def measure(lm: runmodel.AuditModel, tok: Tokenizer, train: Documents, samples: int, length: int,
            seed: int, temperature: float = 1.0, top_k: int = 0,
            progress: bool = True) -> dict[str, Any]:
    texts = sample_texts(lm, tok, samples, length, seed, temperature, top_k, progress=progress)
    found = [hit for text in texts for hit in find_pii(text)]
    distinct = {s for _, s in found}
    memorised = in_training(distinct, train, tok)
    by_kind = {}
    for kind in PII_KINDS:
        mine = [s for k, s in found if k == kind]
        by_kind[kind] = {"found": len(mine), "distinct": len(set(mine)),
                         "in_training_text": len(set(mine) & memorised)}
    return {"samples": samples, "tokens_per_sample": length, "temperature": temperature,
            "top_k": top_k,
            "found": len(found), "distinct": len(distinct),
            "in_training_text": len(memorised), "by_kind": by_kind,
            "strings": [{"kind": k, "text": s, "in_training_text": s in memorised}
                        for k, s in sorted(set(found))]}
