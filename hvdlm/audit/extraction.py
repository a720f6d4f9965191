"""Extractable training documents (Carlini et al. 2022, "Quantifying Memorization Across
Neural Language Models"): a document counts as extracted when, given its first p tokens (after
an end-of-text, as documents follow one another in training), greedy decoding reproduces its
next k tokens exactly. Measured on M random training documents (canaries left out) and, as
the baseline, M validation documents, both split by how often the document occurred in the
corpus: from DATA/dedup_counts.npy after --dedup, by counting the copies in the split
otherwise (copies of a text always land in the same split), "unknown" for a deduplicated
dataset that did not record them.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from hvdlm.audit import runmodel
from hvdlm.text import shards
from hvdlm.text.shards import Manifest

BUCKETS = ((1, 1, "1"), (2, 9, "2-9"), (10, 99, "10-99"), (100, None, "100+"))


@dataclass
class Documents:
    """Where each document of a split lies: shard number, first token, one past end-of-text."""

    paths: list
    shard: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @classmethod
    def of(cls, manifest: Manifest, split: str) -> "Documents":
        paths = [manifest.shard_path(s) for s in manifest.splits.get(split, [])]
        shard, start, end = [], [], []
        for i, path in enumerate(paths):
            offsets = shards.read_doc_offsets(path)
            shard.append(np.full(len(offsets) - 1, i))
            start.append(offsets[:-1])
            end.append(offsets[1:])
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64))
        return cls(paths, cat(shard), cat(start), cat(end))

    def __len__(self) -> int:
        return len(self.start)

    def tokens(self, i: int, tokens_of: dict) -> np.ndarray:
        """Document i without its end-of-text."""
        s = int(self.shard[i])
        if s not in tokens_of:
            tokens_of[s] = shards.open_tokens(self.paths[s])
        return np.asarray(tokens_of[s][self.start[i]:self.end[i] - 1])


def copies_in_split(docs: Documents) -> np.ndarray:
    """How many documents of the split have each one's exact tokens."""
    tokens_of: dict = {}
    digests = np.array([hashlib.blake2b(docs.tokens(i, tokens_of).tobytes(),
                                        digest_size=16).digest() for i in range(len(docs))],
                       dtype="V16")
    if not len(digests):
        return np.zeros(0, dtype=np.int64)
    _, inverse, counts = np.unique(digests, return_inverse=True, return_counts=True)
    return counts[inverse.ravel()]


def bucket(count: int) -> str:
    for lo, hi, name in BUCKETS:
        if count >= lo and (hi is None or count <= hi):
            return name
    return "unknown"


def measure(lm: runmodel.AuditModel, docs: Documents, skip: set[int], counts: np.ndarray | None,
            documents: int, prefix: int, suffix: int, seed: int, batch: int = 64,
            desc: str = "extract", progress: bool = True) -> dict[str, Any]:
    """Extraction rate over up to `documents` random documents of at least prefix + suffix
    tokens; `counts` (one per document of `docs`) splits it by occurrences, None: unknown."""
    lengths = docs.end - docs.start - 1
    eligible = np.array([i for i in np.flatnonzero(lengths >= prefix + suffix)
                         if int(i) not in skip], dtype=np.int64)
    rng = np.random.default_rng([seed, 0xE7AC7])
    chosen = np.sort(rng.choice(eligible, min(documents, len(eligible)), replace=False)) \
        if len(eligible) else eligible
    tokens_of: dict = {}
    rows = np.stack([docs.tokens(int(i), tokens_of)[:prefix + suffix] for i in chosen]) \
        if len(chosen) else np.zeros((0, prefix + suffix), dtype=np.int64)
    rows = torch.from_numpy(rows.astype(np.int64))
    hit = np.zeros(len(chosen), dtype=bool)
    bar = tqdm(total=len(chosen), desc=desc, unit="doc", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    for a in range(0, len(chosen), batch):
        part = rows[a:a + batch]
        prompts = torch.cat([torch.full((len(part), 1), lm.eos_id), part[:, :prefix]], dim=1)
        out = runmodel.tokens_after(lm, prompts, suffix)
        hit[a:a + batch] = (out == part[:, prefix:]).all(dim=1).numpy()
        bar.update(len(part))
    bar.close()
    result: dict[str, Any] = {"eligible": int(len(eligible)), "documents": int(len(chosen)),
                              "extracted": int(hit.sum()),
                              "rate": round(float(hit.mean()), 4) if len(chosen) else None}
    if counts is not None:
        names = np.array([bucket(int(c)) for c in counts[chosen]], dtype=object)
        result["by_occurrences"] = {
            name: {"documents": int((names == name).sum()),
                   "extracted": int(hit[names == name].sum()),
                   "rate": round(float(hit[names == name].mean()), 4)}
            for _, _, name in BUCKETS if (names == name).any()}
    return result
