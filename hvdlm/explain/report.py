"""The report of a text (or of each chosen document) and of a dataset split, as one dict.

Every number the page shows is in this dict (the page is drawn from it; explain.json is it).
A text is cut into windows the way evaluate cuts a split: window j is tokens [j*S, j*S + S]
(S = model.seq_len), each predicting S tokens, the last one shorter. Surprisal covers every
token; attention, logit lens, attributions and recurrent states look at the window holding the
chosen position (default: the most surprising token).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hvdlm.errors import UsageError
from hvdlm.explain import attribution, recurrent, scores, transformer
from hvdlm.models.gpt import GPT
from hvdlm.models.llama import Llama
from hvdlm.models.rnn import RNNLM
from hvdlm.text import shards
from hvdlm.text.tokenizer import EOS, Tokenizer
from hvdlm.training import data
from hvdlm.training.scoring import byte_lengths

MIN_DOC_TOKENS = 8   # documents with fewer scored tokens are not ranked hardest/easiest
RANKED = 5           # hardest and easiest documents listed


@dataclass
class Options:
    top_k: int = 5                   # next-token predictions kept per position
    position: int | None = None      # the token to attribute (its index); None: the most
                                     # surprising one
    integrated_gradients: bool = False
    ig_steps: int = 64
    map_size: int = 64               # attention maps are averaged down to this many cells a side
    max_tokens: int = 4096           # longer texts and documents are cut (said on the page)
    documents: int = 3               # --data: documents explained one by one
    batch_size: int = 16             # --data: windows per forward pass
    max_windows: int = 0             # --data: windows scored (0 = the whole split)


class Explainer:
    """A loaded model with its tokenizer, and the token texts the report refers to."""

    def __init__(self, model: nn.Module, seq_len: int, vocab_size: int, tokenizer: Tokenizer,
                 device: torch.device, options: Options):
        self.model, self.seq_len, self.vocab_size = model, seq_len, vocab_size
        self.tokenizer, self.device, self.options = tokenizer, device, options
        self.token_bytes = byte_lengths(tokenizer)
        self.token_text: dict[int, str] = {}

    def text_of(self, ids) -> list[str]:
        """Display text of each id (remembered for the report's `token_text`)."""
        out = []
        for i in map(int, ids):
            if i not in self.token_text:
                text = EOS if i == self.tokenizer.eos_id else self.tokenizer.decode([i])
                if "\ufffd" in text and self.tokenizer.is_byte:
                    text = f"\\x{i:02x}"  # one byte of a longer UTF-8 character
                self.token_text[i] = text
            out.append(self.token_text[i])
        return out

    def text(self, ids: list[int], title: str) -> dict:
        """The report of one token sequence: surprisal, attention, lens, attributions, states."""
        opts, S = self.options, self.seq_len
        given = len(ids)
        if given < 2:
            raise UsageError(f"{title}: encodes to {given} token(s); a report needs at least 2 "
                             "(one read, one predicted)")
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise UsageError(f"{title}: token id {bad} is outside the model's vocabulary "
                             f"(0..{self.vocab_size - 1}); is this the run's tokenizer?")
        ids = ids[:opts.max_tokens]
        starts = list(range(0, len(ids) - 1, S))
        windows = [torch.tensor([ids[s:s + S + 1]]) for s in starts]
        totals, tok = scores.score(self.model, windows, self.token_bytes, self.device, opts.top_k)
        position = opts.position if opts.position is not None else int(np.argmax(tok.bits)) + 1
        if not 1 <= position < len(ids):
            raise UsageError(f"--position {position}: {title} has positions 1..{len(ids) - 1}")
        start = (position - 1) // S * S
        window = torch.tensor([ids[start:start + S + 1]], device=self.device)
        self.text_of(ids)
        self.text_of(np.unique(tok.top_ids))
        return {"title": title, "ids": ids, "given_tokens": given,
                "windows": [[s, min(s + S + 1, len(ids))] for s in starts], "scores": totals,
                "surprisal_bits": _rounded(tok.bits),
                "top_ids": tok.top_ids.tolist(), "top_p": _rounded(tok.top_probs),
                "focus": {"position": position, "window": [start, start + window.shape[1]],
                          "chosen": "--position" if opts.position is not None
                          else "most surprising"},
                "attention": self._attention(window, start),
                "attribution": self._attribution(window, position - start, start),
                "recurrent": self._recurrent(window, start)}

    def _attention(self, window: torch.Tensor, start: int) -> dict:
        """Attention maps and head summaries, and the logit lens, of a GPT's window."""
        if not isinstance(self.model, (GPT, Llama)):
            return {"absent": f"model.arch={self.arch} has no attention layers; attention and "
                              "the logit lens are GPT and Llama sections"}
        x, targets = window[:, :-1], window[0, 1:]
        tr = transformer.trace(self.model, x)
        weights = torch.stack(tr.attention)                           # (L, nh, T, T)
        maps = transformer.pooled(weights, self.options.map_size)
        lens = transformer.logit_lens(self.model, tr.residuals, targets, tr.logits)
        self.text_of(np.unique(lens["top_ids"]))
        return {"span": [start, start + x.shape[1]], "layers": len(tr.attention),
                "heads": weights.shape[1], "cells": maps.shape[-1],
                "maps": _rounded(maps, 4),
                "summaries": [transformer.head_summaries(w) for w in tr.attention],
                "checks": {"row_sum_max_error": float((weights.sum(-1) - 1).abs().max()),
                           "fused_max_error": tr.fused_error,
                           "lens_last_layer_max_error": lens.pop("last_layer_max_error")},
                "lens": {"layers": ["embeddings"] + [f"block {i + 1}"
                                                     for i in range(len(tr.attention))],
                         **lens}}

    def _attribution(self, window: torch.Tensor, local: int, start: int) -> dict:
        if attribution.token_embedding(self.model) is None:
            return {"absent": f"model.arch={self.arch} has no single token embedding layer to "
                              "attribute through"}
        grad_x, logprob = attribution.gradient_x_input(self.model, window, local)
        out = {"position": start + local, "target": int(window[0, local]),
               "context": [start, start + local], "logprob": logprob,
               "gradient_x_input": _rounded(grad_x)}
        if self.options.integrated_gradients:
            ig = attribution.integrated_gradients(self.model, window, local,
                                                  self.options.ig_steps)
            out["integrated_gradients"] = {**ig, "attributions": _rounded(ig["attributions"])}
        return out

    def _recurrent(self, window: torch.Tensor, start: int) -> dict:
        if not isinstance(self.model, RNNLM):
            return {"absent": f"model.arch={self.arch} is not a recurrent model"}
        layers, error = recurrent.recompute(self.model, window[:, :-1])
        return {"arch": self.arch, "span": [start, start + window.shape[1] - 1],
                "layers": recurrent.summaries(layers), "torch_max_error": error}

    @property
    def arch(self) -> str:
        return getattr(getattr(self.model, "cfg", None), "arch", type(self.model).__name__)

    def split(self, manifest: shards.Manifest, split: str) -> dict:
        """The split's windows scored as evaluate scores them, and what the scores show."""
        opts, S = self.options, self.seq_len
        windows = data.TokenWindows(manifest, split, S)
        n = min(len(windows), opts.max_windows or len(windows))
        batches = data.loader(windows, data.EvalBatches(n, opts.batch_size, 0, 1), 0)
        totals, tok = scores.score(self.model, batches, self.token_bytes, self.device, top_k=0)
        bits = tok.bits
        documents = document_losses(windows, tok.nll, n)
        ranked = sorted((d for d in documents if d["tokens"] >= MIN_DOC_TOKENS),
                        key=lambda d: d["loss"])
        for doc in ranked[:RANKED] + ranked[-RANKED:]:
            doc["snippet"] = self.tokenizer.decode(document_ids(windows, doc))[:120]
        return {"split": split, "windows": n, "windows_in_split": len(windows),
                "scores": totals,
                "histogram_bits": scores.histogram(bits),
                "loss_by_position_bits": _rounded(bits.reshape(n, S).mean(0)),
                "calibration": scores.calibration(tok.confidence, tok.correct),
                "documents_scored": len(documents),
                "hardest": ranked[::-1][:RANKED], "easiest": ranked[:RANKED],
                "min_document_tokens": MIN_DOC_TOKENS}

    def documents(self, manifest: shards.Manifest, split: str) -> list[dict]:
        """The reports of the split's first `options.documents` documents (2 tokens or more)."""
        out = []
        for k, shard in enumerate(manifest.splits[split]):
            path = manifest.shard_path(shard)
            tokens, offsets = shards.open_tokens(path), shards.read_doc_offsets(path)
            for d, (a, b) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
                if len(out) == self.options.documents:
                    return out
                if b - a >= 2:
                    ids = np.asarray(tokens[a:b], dtype=np.int64).tolist()
                    out.append(self.text(ids, f"{split} shard {k} document {d}"))
        return out


def document_losses(windows: data.TokenWindows, nll: np.ndarray, n: int) -> list[dict]:
    """Mean loss (nats) of each document over its tokens that the first n windows predict."""
    S, rows = windows.seq_len, nll.reshape(n, windows.seq_len)
    out = []
    for k, path in enumerate(windows.paths):
        first, last = int(windows.starts[k]), min(int(windows.starts[k + 1]), n)
        if last <= first:
            break
        predicted = np.zeros(1 + (last - first) * S)              # token p of the shard: loss
        predicted[1:] = rows[first:last].ravel()                   # (tokens 1.. are targets)
        sums = np.concatenate([[0.0], np.cumsum(predicted)])
        offsets = np.minimum(shards.read_doc_offsets(path), len(predicted))
        for d, (a, b) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
            scored_from = max(a, 1)                                # token 0 is never predicted
            if b > scored_from:
                out.append({"shard": k, "document": d, "start": a, "end": b,
                            "tokens": b - scored_from,
                            "loss": float((sums[b] - sums[scored_from]) / (b - scored_from))})
    return out


def document_ids(windows: data.TokenWindows, doc: dict) -> list[int]:
    """The first tokens of a ranked document (for its snippet)."""
    tokens = shards.open_tokens(windows.paths[doc["shard"]])
    end = min(doc["end"], doc["start"] + 80)
    return np.asarray(tokens[doc["start"]:end], np.int64).tolist()


def _rounded(values, digits: int = 6):
    """Nested lists of rounded floats (a tensor or array of any shape)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()
