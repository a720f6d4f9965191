"""Controlled decoding, batched: the one loop behind hvdlm.generate and hvdlm.audit.

    from hvdlm.models.decoding import DecodeOptions, continue_batch, continue_text
    options = DecodeOptions(max_new_tokens=200, temperature=0.8, top_p=0.95, stop=("\\n\\n",),
                            ban=("password",), repetition_penalty=1.2, max_time=10)
    out = continue_text(model, tokenizer.encode(prompt), options, seq_len=128,
                        eos_id=tokenizer.eos_id, detokenize=tokenizer.decode, prompt=prompt,
                        generator=torch.Generator().manual_seed(0))
    print(prompt + out.text, out.reason)
    rows = continue_batch(model, prompts, options, seq_len=128)  # prompts (B, T): B at once

`continue_batch` decodes B prompts of one length together; `continue_text` is it for one.
Each new token starts from the model's next-token logits (B, vocab), through its decoder:
`decoder(seq_len)` where the model has one (the CNN's cache of past conv inputs; GPT's keys and
values and the RNN's state while the window fills: one column per token), else the last seq_len
tokens recomputed (`WindowDecoder`). Then, in order: the repetition penalty (CTRL,
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

# Each drawn token is checked against all of them (and argparse's time grows with the square
# of the number of options: hvdlm.generate counts --ban before parsing).
MAX_BANS, MAX_BAN_CHARS = 1_000, 1_000_000

Detokenize = Callable[[Sequence[int]], str]


class Decoder(Protocol):
    """Next-token logits for B texts at once, one token each at a time; a model may offer its
    own via decoder(seq_len)."""

    def start(self, ids: torch.Tensor) -> torch.Tensor:
        """Read the prompts ids (B, T); the logits (B, vocab) of the token after each."""

    def push(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token to each text, tokens (B,); the logits (B, vocab) after each."""


class WindowDecoder:
    """Any model: its forward pass over the last seq_len tokens, again for every new token."""

    def __init__(self, model: torch.nn.Module, seq_len: int):
        self.model, self.seq_len = model, seq_len
        self.ids = torch.zeros(0, 0, dtype=torch.long)
        param = next(model.parameters(), None)
        self.device = param.device if param is not None else torch.device("cpu")

    def _logits(self) -> torch.Tensor:
        return self.model(self.ids[:, -self.seq_len:])[:, -1]  # (B, V)

    def start(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids = ids.to(self.device)
        return self._logits()

    def push(self, tokens: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, tokens.to(self.device)[:, None]], dim=1)
        return self._logits()


class FillingWindowDecoder:
    """Incremental while the texts still fit the window: `prefill(ids)` reads windows (B, T)
    from their start, `extend(tokens)` adds one token (B,) to each. Once the window is full each
    new token shifts it, and a model trained on windows from position 0 (GPT) or from a zero
    state (RNN) must see the shifted window afresh, so it is read again: the logits stay those
    of WindowDecoder."""

    def __init__(self, seq_len: int, device: torch.device):
        self.seq_len, self.device = seq_len, device
        self.ids = torch.zeros(0, 0, dtype=torch.long)  # (B, window so far)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def start(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids = ids[:, -self.seq_len:].to(self.device)
        return self.prefill(self.ids)

    @torch.no_grad()
    def push(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.to(self.device)
        if self.ids.shape[1] == self.seq_len:
            return self.start(torch.cat([self.ids[:, 1:], tokens[:, None]], dim=1))
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        return self.extend(tokens)


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
        # Bounded away from 0 and infinity: logits / 1e-300 overflow to inf and then NaN.
        checks = [
            (self.max_new_tokens >= 0, "--max-new-tokens must be >= 0"),
            (self.temperature >= 0, "--temperature must be >= 0 (0 = greedy)"),
            (self.temperature == 0 or 1e-3 <= self.temperature <= 1e3,
             "--temperature must be 0 (greedy) or in [0.001, 1000]"),
            (self.top_k >= 0, "--top-k must be >= 0 (0 = no top-k filter)"),
            (0 < self.top_p <= 1, "--top-p must be in (0, 1] (1 = no nucleus filter)"),
            (self.top_p >= 1e-9, "--top-p must be at least 1e-9"),
            (self.repetition_penalty > 0, "--repetition-penalty must be > 0 (1 = none)"),
            (1e-3 <= self.repetition_penalty <= 1e3,
             "--repetition-penalty must be in [0.001, 1000] (1 = none)"),
            (all(self.stop), "--stop strings must not be empty"),
            (all(self.ban), "--ban strings must not be empty"),
            (len(self.ban) <= MAX_BANS and sum(map(len, self.ban)) <= MAX_BAN_CHARS,
             f"--ban may be given at most {MAX_BANS} times, {MAX_BAN_CHARS} characters in all"),
            (self.max_time is None or self.max_time > 0, "--max-time must be > 0 seconds"),
            (self.max_time is None or self.max_time <= 1e9, "--max-time must be <= 1e9 seconds"),
        ]  # comparisons with NaN are False: NaN is refused too
        for ok, message in checks:
            if not ok:
                raise UsageError(f"{message}, got {self._value(message)}")

    def _value(self, message: str) -> str:
        name = message.split()[0].lstrip("-").replace("-", "_")
        value = getattr(self, name)
        return f"{len(value)}" if name == "ban" else repr(value)


@dataclass
class Continuation:
    text: str           # the decoded continuation, ending before a stop string
    tokens: list[int]   # the tokens drawn (a stop string's included, end-of-text not)
    reason: str         # length | eos | stop | banned | time


class BanList:
    """Which next tokens would put a banned string into each text's output."""

    def __init__(self, strings: Sequence[str], detokenize: Detokenize | None,
                 prompts: Sequence[str], eos_id: int | None):
        self.strings, self.detokenize, self.eos_id = tuple(strings), detokenize, eos_id
        longest = max(map(len, self.strings), default=1)
        # An occurrence that is not inside the prompt alone ends in the continuation, so it
        # starts at most longest - 1 characters before it.
        self.tails = [p[len(p) - (longest - 1):] if longest > 1 else "" for p in prompts]
        self._always: torch.Tensor | None = None

    def always(self, vocab: int, device: torch.device) -> torch.Tensor | None:
        """Tokens whose own text holds a banned string (a bool mask), or None without bans."""
        if not self.strings:
            return None
        if self._always is None or self._always.numel() != vocab:
            # A lone token's text is part of any text it ends (UTF-8 synchronises), except
            # for U+FFFD, which a partial character shows alone and not in context.
            plain = [s for s in self.strings if "\ufffd" not in s]
            self._always = tokens_holding(plain, [self.detokenize([t]) for t in range(vocab)])
            if self.eos_id is not None and self.eos_id < vocab:
                self._always[self.eos_id] = False
        return self._always.to(device)

    def completes(self, row: int, out: list[int], token: int) -> bool:
        """Whether appending `token` to text `row`'s continuation `out` puts a banned string
        in it."""
        if not self.strings or token == self.eos_id:
            return False
        text = self.tails[row] + self.detokenize(out + [token])
        return any(s in text for s in self.strings)


def tokens_holding(strings: Sequence[str], texts: list[str]) -> torch.Tensor:
    """A bool mask of the `texts` (each token's own, decoded once) that hold any of `strings`.

    The strings go into one set per length; each text's substrings of those lengths are looked
    up, so the cost grows with the vocabulary's characters times the number of distinct
    lengths (at most the longest token's), never with vocabulary x strings."""
    longest = max(map(len, texts), default=0)
    by_length: dict[int, set[str]] = {}
    for s in strings:
        if len(s) <= longest:  # a longer string is inside no single token
            by_length.setdefault(len(s), set()).add(s)
    mask = [False] * len(texts)
    for n, wanted in by_length.items():
        for token, text in enumerate(texts):
            if not mask[token] and any(text[i:i + n] in wanted
                                       for i in range(len(text) - n + 1)):
                mask[token] = True
    return torch.tensor(mask, dtype=torch.bool)


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty on the tokens marked in `seen` (a bool mask)."""
    if penalty == 1.0:
        return logits
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """`logits` (..., V) with -inf outside the fewest most likely tokens of each row whose
    probability reaches top_p."""
    probs = torch.softmax(logits, -1)
    ranked, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # ties: lower id
    before = ranked.cumsum(-1) - ranked  # probability of the tokens ranked above each
    dropped = torch.zeros_like(before, dtype=torch.bool).scatter(-1, order, before >= top_p)
    return logits.masked_fill(dropped, -math.inf)


def keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """`logits` (..., V) with all but the k largest of each row set to -inf (ties kept)."""
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def pick(logits: torch.Tensor, options: DecodeOptions,
         generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) -> tokens (B,): greedy (temperature 0), or one draw per row after
    temperature, top-k and top-p."""
    if options.temperature == 0:
        return logits.argmax(-1)
    logits = logits / options.temperature
    if options.top_k:
        logits = keep_top_k(logits, options.top_k)
    if options.top_p < 1:
        logits = nucleus(logits, options.top_p)
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]


def _redraw(logits: torch.Tensor, forbidden: torch.Tensor, token: int, options: DecodeOptions,
            generator: torch.Generator | None, completes: Callable[[int], bool]) -> int | None:
    """One text's next token (logits (V,)), drawn again without each one that would complete a
    banned string; None if no token is left."""
    while completes(token):
        forbidden = forbidden.clone()
        forbidden[token] = True
        masked = logits.masked_fill(forbidden, -math.inf)
        if not bool((masked > -math.inf).any()):
            return None
        token = int(pick(masked[None], options, generator)[0])
    return token


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


@torch.no_grad()
def continue_batch(model: torch.nn.Module, prompts: torch.Tensor,
                   options: DecodeOptions = DecodeOptions(), *, seq_len: int,
                   eos_id: int | None = None, generator: torch.Generator | None = None,
                   detokenize: Detokenize | None = None, texts: Sequence[str] | None = None,
                   cached: bool = True) -> list[Continuation]:
    """Continue each row of `prompts` (B, T) under `options` (module docstring): the one
    decoding loop, through the model's own decoder. `detokenize` (ids -> text) is needed for
    stop and ban strings; `texts` are the prompts' texts (default: detokenized), whose ends a
    banned string may not complete. Draws happen on `generator`'s device. With eos_id None and
    no stop, ban or time limit every row gets max_new_tokens tokens. `cached=False` recomputes
    the window for every token even where the model has its own decoder (for comparisons)."""
    options.validate()
    if (options.stop or options.ban) and detokenize is None:
        raise ValueError("stop and ban strings need detokenize (token ids -> text)")
    rows = prompts.shape[0]
    if texts is None:
        texts = [detokenize(p) if options.ban else "" for p in prompts.tolist()]
    deadline = time.monotonic() + options.max_time if options.max_time else math.inf
    bans = BanList(options.ban, detokenize, texts, eos_id)
    decoder = decoder_for(model, seq_len) if cached else WindowDecoder(model, seq_len)
    watch = eos_id is not None or bool(options.stop or options.ban)  # rows may end early
    drawn: list[torch.Tensor] = []   # (B,) per step
    outs: list[list[int]] = [[] for _ in range(rows)]  # the live rows' tokens, when watched
    reason, cut = ["length"] * rows, {}  # cut: row -> its text up to a stop string
    live = set(range(rows))
    seen: torch.Tensor | None = None
    for _ in range(options.max_new_tokens):
        if time.monotonic() >= deadline:
            for b in live:
                reason[b] = "time"
            break
        logits = (decoder.start(prompts) if not drawn else decoder.push(drawn[-1])).float()
        if generator is not None and logits.device != generator.device:
            logits = logits.to(generator.device)
        if options.repetition_penalty != 1.0:
            if seen is None:
                seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(
                    1, prompts.to(logits.device), True)
            logits = penalize_repeats(logits, seen, options.repetition_penalty)
        forbidden = bans.always(logits.shape[-1], logits.device)
        if forbidden is not None:
            logits = logits.masked_fill(forbidden, -math.inf)
            empty = (~(logits > -math.inf).any(-1)).tolist()
            logits = logits.masked_fill(torch.tensor(empty, device=logits.device)[:, None], 0.0)
        tokens = pick(logits, options, generator)
        if watch:
            values = tokens.tolist()
            for b in sorted(live):
                token = values[b]
                if forbidden is not None:
                    token = None if empty[b] else _redraw(
                        logits[b], forbidden, token, options, generator,
                        lambda t, b=b: bans.completes(b, outs[b], t))
                if token is None or token == eos_id:
                    reason[b] = "banned" if token is None else "eos"
                    live.discard(b)
                    continue
                values[b] = token
                outs[b].append(token)
                at = _first_stop(detokenize(outs[b]), options.stop) if options.stop else None
                if at is not None:
                    reason[b], cut[b] = "stop", detokenize(outs[b])[:at]
                    live.discard(b)
            tokens = torch.tensor(values, dtype=torch.long, device=tokens.device)
        drawn.append(tokens)
        if seen is not None:
            seen[torch.arange(rows, device=seen.device), tokens] = True
        if not live:
            break
    if not watch:  # every row ran the whole loop
        outs = torch.stack(drawn, 1).tolist() if drawn else outs
    return [Continuation(cut[b] if b in cut else detokenize(ids) if detokenize else "", ids,
                         reason[b]) for b, ids in enumerate(outs)]


def continue_text(model: torch.nn.Module, ids: list[int], options: DecodeOptions = DecodeOptions(),
                  *, seq_len: int, eos_id: int | None = None,
                  generator: torch.Generator | None = None, detokenize: Detokenize | None = None,
                  prompt: str | None = None, cached: bool = True) -> Continuation:
    """Continue the token ids `ids` under `options`: continue_batch with one row. `prompt` is
    the text of `ids` (default: detokenize(ids))."""
    return continue_batch(model, torch.tensor([ids], dtype=torch.long), options,
                          seq_len=seq_len, eos_id=eos_id, generator=generator,
                          detokenize=detokenize, texts=None if prompt is None else [prompt],
                          cached=cached)[0]
