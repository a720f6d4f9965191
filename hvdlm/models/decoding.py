"""Controlled decoding: the loop behind `python -m hvdlm.generate` (and `sampling.sample`).

    from hvdlm.models.decoding import DecodeOptions, continue_text
    options = DecodeOptions(max_new_tokens=200, temperature=0.8, top_p=0.95, stop=("\\n\\n",),
                            ban=("password",), repetition_penalty=1.2, max_time=10)
    out = continue_text(model, tokenizer.encode(prompt), options, seq_len=128,
                        eos_id=tokenizer.eos_id, detokenize=tokenizer.decode, prompt=prompt,
                        generator=torch.Generator().manual_seed(0))
    print(prompt + out.text, out.reason)

Each new token starts from the model's next-token logits, through its decoder: `decoder(seq_len)`
where the model has one (the CNN's cache of past conv inputs; GPT's keys and values and the RNN's
state while the window fills: one column per token), else the last seq_len tokens recomputed
(`WindowDecoder`). Then, in order: the repetition penalty (CTRL,
Keskar et al. 2019: the logit of a token already in the prompt or the continuation is divided by
it when positive, multiplied when negative), the banned tokens masked, and greedy argmax
(temperature 0) or temperature, top-k, top-p (nucleus: the fewest most likely tokens whose
probability reaches p, the most likely always kept; p -> 0 is greedy) and one draw from
`generator`.

Text controls look at the decoded text, so they hold across token boundaries:
- ban: after a token is drawn, the prompt's last characters plus the continuation are decoded; if
  they now hold a banned string, that token is forbidden at this position and another is drawn.
  Tokens whose own text holds one are forbidden from the start. When every token is forbidden,
  decoding ends there (reason "banned"). A banned string inside the prompt alone is left alone.
- stop: the continuation ends before the first stop string found in it (reason "stop").
- max_time: no new token is started after that many seconds (reason "time").
End-of-text ends it too ("eos"), and so does max_new_tokens ("length").
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from hvdlm.errors import UsageError

Detokenize = Callable[[Sequence[int]], str]


class Decoder(Protocol):
    """Next-token logits, one token at a time; a model may offer its own via decoder(seq_len)."""

    def start(self, ids: list[int]) -> torch.Tensor:
        """Read the prompt; the logits (vocab,) of the token after it."""

    def push(self, token: int) -> torch.Tensor:
        """Append one token; the logits (vocab,) of the token after it."""


class WindowDecoder:
    """Any model: its forward pass over the last seq_len tokens, again for every new token."""

    def __init__(self, model: torch.nn.Module, seq_len: int):
        self.model, self.seq_len, self.ids = model, seq_len, []
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")

    def _logits(self) -> torch.Tensor:
        context = torch.tensor([self.ids[-self.seq_len:]], dtype=torch.long, device=self.device)
        return self.model(context)[0, -1]

    def start(self, ids: list[int]) -> torch.Tensor:
        self.ids = list(ids)
        return self._logits()

    def push(self, token: int) -> torch.Tensor:
        self.ids.append(token)
        return self._logits()


class FillingWindowDecoder:
    """Incremental while the text still fits the window: `prefill(ids)` reads a window from its
    start, `extend(token)` adds one token to it. Once the window is full each new token shifts
    it, and a model trained on windows from position 0 (GPT) or from a zero state (RNN) must see
    the shifted window afresh, so it is read again: the logits stay those of WindowDecoder."""

    def __init__(self, seq_len: int):
        self.seq_len, self.ids = seq_len, []

    def prefill(self, ids: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def extend(self, token: int) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def start(self, ids: list[int]) -> torch.Tensor:
        self.ids = list(ids)[-self.seq_len:]
        return self.prefill(self.ids)

    @torch.no_grad()
    def push(self, token: int) -> torch.Tensor:
        if len(self.ids) == self.seq_len:
            return self.start(self.ids[1:] + [token])
        self.ids.append(token)
        return self.extend(token)


def decoder_for(model: torch.nn.Module, seq_len: int) -> Decoder:
    """The model's own incremental decoder if it has one, else a WindowDecoder."""
    make = getattr(model, "decoder", None)
    return make(seq_len) if callable(make) else WindowDecoder(model, seq_len)


@dataclass(frozen=True)
class DecodeOptions:
    max_new_tokens: int = 200
    temperature: float = 1.0          # 0 = greedy
    top_k: int = 0                    # 0 = no top-k filter
    top_p: float = 1.0                # 1 = no nucleus filter
    repetition_penalty: float = 1.0   # 1 = none
    stop: tuple[str, ...] = ()        # the continuation ends before the first one
    ban: tuple[str, ...] = ()         # never in the output
    max_time: float | None = None     # seconds; None = no limit

    def validate(self) -> None:
        """UsageError naming the first bad option (as hvdlm.generate spells it)."""
        checks = [
            (self.max_new_tokens >= 0, "--max-new-tokens must be >= 0"),
            (self.temperature >= 0, "--temperature must be >= 0 (0 = greedy)"),
            (self.top_k >= 0, "--top-k must be >= 0 (0 = no top-k filter)"),
            (0 < self.top_p <= 1, "--top-p must be in (0, 1] (1 = no nucleus filter)"),
            (self.repetition_penalty > 0, "--repetition-penalty must be > 0 (1 = none)"),
            (all(self.stop), "--stop strings must not be empty"),
            (all(self.ban), "--ban strings must not be empty"),
            (self.max_time is None or self.max_time > 0, "--max-time must be > 0 seconds"),
        ]  # comparisons with NaN are False: NaN is refused too
        for ok, message in checks:
            if not ok:
                raise UsageError(f"{message}, got {self._value(message)}")

    def _value(self, message: str) -> str:
        name = message.split()[0].lstrip("-").replace("-", "_")
        return repr(getattr(self, name))


@dataclass
class Continuation:
    text: str           # the decoded continuation, ending before a stop string
    tokens: list[int]   # the tokens drawn (a stop string's included, end-of-text not)
    reason: str         # length | eos | stop | banned | time


class BanList:
    """Which next tokens would put a banned string into the output text."""

    def __init__(self, strings: Sequence[str], detokenize: Detokenize | None, prompt: str,
                 eos_id: int | None):
        self.strings, self.detokenize, self.eos_id = tuple(strings), detokenize, eos_id
        longest = max(map(len, self.strings), default=1)
        # An occurrence that is not inside the prompt alone ends in the continuation, so it
        # starts at most longest - 1 characters before it.
        self.tail = prompt[len(prompt) - (longest - 1):] if longest > 1 else ""
        self._always: torch.Tensor | None = None

    def _holds(self, text: str) -> bool:
        return any(s in text for s in self.strings)

    def always(self, vocab: int) -> torch.Tensor | None:
        """Tokens whose own text holds a banned string (a bool mask), or None without bans."""
        if not self.strings:
            return None
        if self._always is None or self._always.numel() != vocab:
            # A lone token's text is part of any text it ends (UTF-8 synchronises), except
            # for U+FFFD, which a partial character shows alone and not in context.
            plain = [s for s in self.strings if "\ufffd" not in s]
            self._always = torch.tensor(
                [t != self.eos_id and any(s in self.detokenize([t]) for s in plain)
                 for t in range(vocab)], dtype=torch.bool)
        return self._always

    def completes(self, out: list[int], token: int) -> bool:
        """Whether appending `token` to the continuation `out` puts a banned string in it."""
        if not self.strings or token == self.eos_id:
            return False
        return self._holds(self.tail + self.detokenize(out + [token]))


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty on the tokens marked in `seen` (a bool mask)."""
    if penalty == 1.0:
        return logits
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """`logits` with -inf outside the fewest most likely tokens whose probability reaches top_p."""
    probs = torch.softmax(logits, -1)
    ranked, order = torch.sort(probs, descending=True, stable=True)  # ties: lower id first
    before = ranked.cumsum(0) - ranked  # probability of the tokens ranked above each
    return logits.index_fill(0, order[before >= top_p], -math.inf)


def keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """`logits` (..., V) with all but the k largest of each row set to -inf (ties kept)."""
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def pick(logits: torch.Tensor, options: DecodeOptions,
         generator: torch.Generator | None) -> int:
    """Greedy (temperature 0), or one draw after temperature, top-k and top-p."""
    if options.temperature == 0:
        return int(logits.argmax())
    logits = logits / options.temperature
    if options.top_k:
        logits = keep_top_k(logits, options.top_k)
    if options.top_p < 1:
        logits = nucleus(logits, options.top_p)
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


def _draw(logits: torch.Tensor, options: DecodeOptions, generator: torch.Generator | None,
          bans: BanList, out: list[int]) -> int | None:
    """The next token, redrawn without each one that would complete a banned string; None if
    no token is left."""
    forbidden = bans.always(logits.numel())
    while True:
        masked = logits if forbidden is None else logits.masked_fill(forbidden, -math.inf)
        if not bool((masked > -math.inf).any()):
            return None
        token = pick(masked, options, generator)
        if not bans.completes(out, token):
            return token
        forbidden = forbidden.clone()  # not None: completes() is False without bans
        forbidden[token] = True


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


@torch.no_grad()
def continue_text(model: torch.nn.Module, ids: list[int], options: DecodeOptions = DecodeOptions(),
                  *, seq_len: int, eos_id: int | None = None,
                  generator: torch.Generator | None = None, detokenize: Detokenize | None = None,
                  prompt: str | None = None, cached: bool = True) -> Continuation:
    """Continue the token ids `ids` under `options` (module docstring). `detokenize` (ids ->
    text) is needed for stop and ban strings; `prompt` is the text of `ids` (default:
    detokenize(ids)), whose end a banned string may not complete. `cached=False` recomputes the
    window for every token even where the model has its own decoder (for comparisons)."""
    options.validate()
    if (options.stop or options.ban) and detokenize is None:
        raise ValueError("stop and ban strings need detokenize (token ids -> text)")
    if prompt is None:
        prompt = detokenize(ids) if detokenize is not None and options.ban else ""
    deadline = time.monotonic() + options.max_time if options.max_time else math.inf
    bans = BanList(options.ban, detokenize, prompt, eos_id)
    decoder = decoder_for(model, seq_len) if cached else WindowDecoder(model, seq_len)
    out: list[int] = []
    seen: torch.Tensor | None = None
    reason = "length"
    for _ in range(options.max_new_tokens):
        if time.monotonic() >= deadline:
            reason = "time"
            break
        logits = (decoder.start(ids) if not out else decoder.push(out[-1])).float().cpu()
        if seen is None:
            seen = torch.zeros(logits.numel(), dtype=torch.bool)
            seen[torch.tensor(ids, dtype=torch.long)] = True
        token = _draw(penalize_repeats(logits, seen, options.repetition_penalty), options,
                      generator, bans, out)
        if token is None or token == eos_id:
            reason = "banned" if token is None else "eos"
            break
        out.append(token)
        seen[token] = True
        if options.stop:
            text = detokenize(out)
            cut = _first_stop(text, options.stop)
            if cut is not None:
                return Continuation(text[:cut], out, "stop")
    return Continuation(detokenize(out) if detokenize is not None else "", out, reason)
