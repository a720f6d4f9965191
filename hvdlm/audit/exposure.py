"""Exposure of planted canaries (Carlini et al. 2019, "The Secret Sharer").

A canary's log-perplexity is -log2 P(text | end-of-text) under the model: the whole document
as it was trained on. Its rank is 1 + the number of candidates of the same space (every
filling of the format's digits) with a lower log-perplexity, and its exposure is
log2(space) - log2(rank) bits: log2(space) when the model ranks it first, about 1.44 bits on
average for a random candidate (and so for a secret the model never saw: the controls).

- exact: every candidate scored, when the space has at most `exact_max` of them (default
  10^6). The forward pass has no cache, so candidates that differ only in their last token (the
  last digit, with the byte tokenizer) share one pass: one context scores ten of them.
- estimate: the paper's. `samples` random candidates are scored, a skew-normal is fitted to
  their log-perplexities, and exposure = -log2 CDF(the canary's). This extrapolates beyond the
  sample, so past log2(samples) bits it can exceed log2(space). Reported beside it: the plain
  sampling estimate log2((samples + 1) / (1 + candidates below)), which cannot.
The estimate is computed always (it is cheap); exact also when the space allows.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from hvdlm.audit import runmodel
from hvdlm.audit.skewnorm import SkewNormal
from hvdlm.text.canaries import fill
from hvdlm.text.tokenizer import Tokenizer

CHUNK = 100_000  # candidates tokenized and scored at a time (a multiple of 10: digit siblings)


def score_texts(lm: runmodel.AuditModel, tok: Tokenizer, texts: Sequence[str],
                bar: tqdm | None = None) -> np.ndarray:
    """Log-perplexity in bits of each text as a document: -log2 P(tokens | end-of-text)."""
    seqs = tok.encode_batch(texts)
    groups: dict[tuple[int, ...], int] = {}  # all tokens but the last -> its index
    group = np.empty(len(seqs), dtype=np.int64)
    last = np.empty(len(seqs), dtype=np.int64)
    for i, seq in enumerate(seqs):
        if not seq:
            raise ValueError("an empty canary text")
        group[i] = groups.setdefault(tuple(seq[:-1]), len(groups))
        last[i] = seq[-1]
    contexts = list(groups)
    by_length = sorted(range(len(contexts)), key=lambda g: len(contexts[g]))
    members = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[members], np.arange(len(contexts) + 1))
    scores = np.empty(len(seqs), dtype=np.float64)
    at = 0
    while at < len(by_length):
        length = len(contexts[by_length[min(len(by_length), at + 4096) - 1]]) + 1
        batch = by_length[at:at + runmodel.rows_per_batch(lm, length)]
        at += len(batch)
        idx = torch.full((len(batch), length), lm.eos_id, dtype=torch.long)
        n = torch.tensor([len(contexts[g]) + 1 for g in batch])  # (B,) context lengths
        for row, g in enumerate(batch):
            idx[row, 1:n[row]] = torch.tensor(contexts[g], dtype=torch.long)
        lp = runmodel.log_probs(lm, idx).cpu()                     # (B, T, V)
        # context token j+1 is the target at position j; position n-1 predicts the last token
        target = torch.roll(idx, -1, dims=1)                   # (B, T)
        picked = lp.gather(2, target[:, :, None]).squeeze(2)   # (B, T)
        inside = torch.arange(length)[None, :] < (n - 1)[:, None]
        shared = (picked * inside).sum(1).double()             # (B,)
        final = lp[torch.arange(len(batch)), n - 1]            # (B, V)
        for row, g in enumerate(batch):
            mine = members[starts[g]:starts[g + 1]]
            scores[mine] = (shared[row] + final[row, last[mine]].double()).numpy()
            if bar is not None:
                bar.update(len(mine))
    return -scores / math.log(2)


def _rank_below(sorted_scores: np.ndarray, x: float) -> int:
    return int(np.searchsorted(sorted_scores, x, side="left"))


def measure(lm: runmodel.AuditModel, tok: Tokenizer, found: dict[str, Any], samples: int,
            exact_max: int, seed: int, progress: bool = True) -> dict[str, Any]:
    """Exposure of every canary and control of DATA/canaries.json (`found`), by group."""
    fmt, digits, space = found["template"], found["digits"], found["space"]
    secrets = [dict(c, group=c["repeats"]) for c in found["canaries"]] + \
        [dict(c, group=0, repeats=0) for c in found["controls"]]
    bar = tqdm(total=len(secrets) + samples + (space if space <= exact_max else 0),
               desc="exposure", unit="cand", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    own = score_texts(lm, tok, [s["text"] for s in secrets], bar)
    rng = np.random.default_rng([seed, 0xE4905])
    sample = np.sort(score_texts(lm, tok, [fill(fmt, int(r), digits)
                                           for r in rng.integers(space, size=samples)], bar))
    dist = SkewNormal.fit(sample)
    exact = None
    if space <= exact_max:
        exact = np.empty(space, dtype=np.float64)
        for a in range(0, space, CHUNK):
            b = min(space, a + CHUNK)
            exact[a:b] = score_texts(lm, tok, [fill(fmt, r, digits) for r in range(a, b)], bar)
        ordered = np.sort(exact)
    bar.close()
    log2_space = math.log2(space)
    for s, x in zip(secrets, own):
        s["log_perplexity_bits"] = round(float(x), 4)
        s["exposure_estimate"] = round(-dist.log_cdf(float(x)) / math.log(2), 4)
        s["exposure_sampled"] = round(math.log2((samples + 1) / (1 + _rank_below(sample, x))), 4)
        if exact is not None:
            mine = exact[int(s["secret"])]  # this enumeration's own score of it
            s["rank"] = 1 + _rank_below(ordered, mine)
            s["exposure_exact"] = round(log2_space - math.log2(s["rank"]), 4)
    groups = []
    for repeats in sorted({s["group"] for s in secrets}, key=lambda r: (r == 0, r)):
        rows = [s for s in secrets if s["group"] == repeats]
        summary = {"repeats": repeats, "kind": "control" if repeats == 0 else "canary",
                   "n": len(rows)}
        for key in ("exposure_exact", "exposure_estimate", "exposure_sampled"):
            if key in rows[0]:
                values = [r[key] for r in rows]
                summary[f"mean_{key}"] = round(float(np.mean(values)), 4)
                summary[f"max_{key}"] = round(float(np.max(values)), 4)
        summary["secrets"] = [{k: v for k, v in r.items() if k not in ("group", "documents")}
                              for r in rows]
        groups.append(summary)
    return {"template": fmt, "space": space, "max_exposure_bits": round(log2_space, 4),
            "method": "exact enumeration and skew-normal estimate" if exact is not None
            else "skew-normal estimate (space too large to enumerate)",
            "estimate_samples": samples,
            "skew_normal": {"xi": dist.xi, "omega": dist.omega, "alpha": dist.alpha},
            "groups": groups}
