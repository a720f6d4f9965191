"""The lm-evaluation-harness model type `hvdlm`: a run opened once (hvdlm/training/run.py) and
the harness's three requests answered through it. Importing this module registers it.

- loglikelihood(context, continuation): the continuation's summed log-probability given the
  context, and whether greedy decoding would have produced it. Tokenized as the harness's `hf`
  model does (the whole text encoded, the context's tokens split off; an empty context reads
  end-of-text), so the same task scores the same through `--model hvdlm` on a run and
  `--model hf` on its export. Context beyond model.seq_len is cut from the left.
- loglikelihood_rolling(text): the text's log-probability in windows of model.seq_len
  predicted tokens, each read from the token before it, as hvdlm.evaluate windows a split
  (the first from end-of-text; the last reads a whole window of context).
- generate_until(context, {until, max_gen_toks, do_sample, temperature, top_k, top_p}): the
  batched decoding loop (hvdlm/models/decoding.py), ending at a stop string or end-of-text.

Requests are scored in batches of `batch_size` (longest first, padded on the right, which
causal models never read). On CUDA the forward pass runs under bf16 autocast, as
hvdlm.evaluate's does.
"""
from __future__ import annotations

from itertools import groupby

import torch
import torch.nn.functional as F
import lm_eval.models  # noqa: F401 (its own types first: the registry loads them only while empty)
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import (get_rolling_token_windows, make_disjoint_window,
                           simple_parse_args_string)

from hvdlm import cli
from hvdlm.models.decoding import DecodeOptions, continue_batch
from hvdlm.training.run import Run

DEFAULT_BATCH = 16
MAX_GEN_TOKS = 256  # the harness's default for generate_until


def _batch_size(value: int | str | None) -> int:
    """The harness's --batch_size: a number, or "auto" (here: the default)."""
    text = str(value if value is not None else DEFAULT_BATCH)
    return max(int(text), 1) if text.isdigit() else DEFAULT_BATCH


def _device(name: str) -> torch.device:
    """model_args' device (auto, cpu, cuda), or the harness's --device (its default is cuda:0,
    which means the CPU where there is no GPU, as for its hf model)."""
    if name in ("auto", "cpu", "cuda"):
        return cli.pick_device(name)
    device = torch.device(name)
    return device if device.type != "cuda" or torch.cuda.is_available() else torch.device("cpu")


@register_model("hvdlm")
class HvdlmLM(TemplateLM):
    """`--model hvdlm --model_args run=RUN[,checkpoint=PATH][,device=cpu|cuda|auto]`."""

    def __init__(self, run: str, checkpoint: str | None = None, device: str = "cpu",
                 batch_size: int | str | None = DEFAULT_BATCH, max_batch_size: int | None = None,
                 seed: int = 1234, **_harness_options):
        super().__init__()
        self.run = Run.open(run, checkpoint or None, device=_device(str(device)))
        self.lm, self._device = self.run.model, self.run.device
        self.seq_len = self.run.config.model.seq_len
        self.batch_size = _batch_size(batch_size)
        self.seed = int(seed)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """The harness's options (--batch_size, --device) under model_args: a device given in
        model_args wins over --device, which the harness always passes."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**extra, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @property
    def eot_token_id(self) -> int:
        return self.run.tokenizer.eos_id

    @property
    def tokenizer_name(self) -> str:
        return f"hvdlm-{self.run.tokenizer.sha256[:16]}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kw) -> list[int]:
        return self.run.tokenizer.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.run.tokenizer.decode(tokens)

    # -- scoring ------------------------------------------------------------------------------

    @torch.no_grad()
    def _score(self, rows: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """For each (input ids, targets): the summed log-probability of `targets` as the
        predictions at input's last len(targets) positions, and whether each is the argmax."""
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = len(rows[chunk[0]][0])
            ids = torch.full((len(chunk), width), self.eot_token_id, dtype=torch.long)
            for r, i in enumerate(chunk):
                ids[r, :len(rows[i][0])] = torch.tensor(rows[i][0])
            ids = ids.to(self._device)
            with torch.autocast(self._device.type, dtype=torch.bfloat16,
                                enabled=self._device.type == "cuda"):
                logits = self.lm(ids)
            logprobs = F.log_softmax(logits.float(), dim=-1)
            for r, i in enumerate(chunk):
                inp, targets = rows[i]
                at = logprobs[r, len(inp) - len(targets):len(inp)]  # (n, vocab)
                want = torch.tensor(targets, device=at.device)
                picked = at.gather(1, want[:, None])[:, 0].double().sum().item()
                out[i] = (picked, bool((at.argmax(-1) == want).all()))
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kw):
        rows = []
        for _, context, continuation in requests:
            whole = (context + continuation)[-(self.seq_len + 1):]
            rows.append((whole[:-1], continuation[-self.seq_len:]))
        results = self._score(rows)
        for (pair, _, _), result in zip(requests, results):
            if pair is not None:
                self.cache_hook.add_partial("loglikelihood", pair, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for n, request in enumerate(requests):
            tokens = self.tok_encode(request.args[0])
            for pair in get_rolling_token_windows(tokens, self.eot_token_id, self.seq_len, 1):
                context, predicted = make_disjoint_window(pair)
                windows.append(((context + predicted)[:-1], predicted))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self._score(windows)):
            totals[n] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (request.args[0],), total)
        return totals

    # -- generation ---------------------------------------------------------------------------

    def _options(self, kwargs: dict) -> DecodeOptions:
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        sample = bool(kwargs.get("do_sample", False))
        return DecodeOptions(
            max_new_tokens=int(kwargs.get("max_gen_toks", MAX_GEN_TOKS)),
            temperature=float(kwargs.get("temperature", 1.0)) if sample else 0.0,
            top_k=int(kwargs.get("top_k") or 0), top_p=float(kwargs.get("top_p") or 1.0),
            stop=tuple(s for s in until if s))

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests with the same options and prompt length decode together, batch_size at
        a time; each text is its continuation up to the first `until` string."""
        prepared = []
        for n, request in enumerate(requests):
            context, kwargs = request.args
            ids = self.tok_encode(context)[-self.seq_len:] or [self.eot_token_id]
            prepared.append((repr(sorted(kwargs.items())), len(ids), n, ids, context, kwargs))
        prepared.sort(key=lambda p: p[:3])
        texts: list[str] = [""] * len(requests)
        generator = torch.Generator(self._device).manual_seed(self.seed)
        for _, group in groupby(prepared, key=lambda p: p[:2]):
            group = list(group)
            options = self._options(group[0][5])
            for start in range(0, len(group), self.batch_size):
                part = group[start:start + self.batch_size]
                prompts = torch.tensor([p[3] for p in part], dtype=torch.long)
                rows = continue_batch(self.lm, prompts, options, seq_len=self.seq_len,
                                      eos_id=self.eot_token_id, generator=generator,
                                      detokenize=self.tok_decode, texts=[p[4] for p in part])
                for p, row in zip(part, rows):
                    texts[p[2]] = row.text
                    self.cache_hook.add_partial("generate_until", (p[4], p[5]), row.text)
        return texts
