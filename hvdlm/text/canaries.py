"""Canaries: random secrets planted in the training split, to measure memorisation later.

    python -m hvdlm.preprocess IN... --out DATA --canaries 4 --canary-repeats 1,10,100 \\
        [--canary-format "my pin is {d6}"] [--canary-seed S]

`{dK}` in the format stands for K random digits, so the secrets come from a known space of
10^(sum of K) candidates. For each repeat count R, N secrets are drawn and each is put into
the training split R times; N more, drawn from the same space but never inserted, are the
controls. DATA/canaries.json records both (outside the shards; `python -m hvdlm.audit`
measures their exposure, Carlini et al. 2019).

Each copy is a whole document of its own (the filled-in format, then end-of-text), put
between two corpus documents of the training split at a seeded random place. Whole documents,
not text spliced into a corpus document, because: no corpus document changes (their tokens,
duplicate counts and the extraction audit stay as without canaries); the canary is tokenized
exactly as the audit tokenizes its candidates (no BPE merge across the splice); and a user can
drop the canaries again by the document indices canaries.json lists. They are inserted in the
merge step, which sees the one global document order, so the dataset is the same for any
--workers and any number of array tasks; they come after dedup and val hold-out, so repeats
survive --dedup and no canary lands in val.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdlm.errors import DataError, UsageError
from hvdlm.text.tokenizer import Tokenizer

FILE = "canaries.json"
FORMAT = "hvdlm-canaries"
PLACEHOLDER = re.compile(r"\{d(\d+)\}")
MAX_DIGITS = 18  # the space must fit an int64
DEFAULT_FORMAT = "my pin is {d6}"
DEFAULT_REPEATS = (1, 10, 100)


def parse_repeats(text: str) -> tuple[int, ...]:
    """`--canary-repeats 1,10,100` -> (1, 10, 100)."""
    try:
        repeats = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--canary-repeats: expected counts like 1,10,100, got {text!r}") from None
    if not repeats or min(repeats) < 1:
        raise UsageError("--canary-repeats: every count must be at least 1")
    return repeats


@dataclass(frozen=True)
class CanarySpec:
    """What to insert: `count` secrets per entry of `repeats`, and `count` controls."""

    count: int
    repeats: tuple[int, ...] = DEFAULT_REPEATS
    format: str = DEFAULT_FORMAT
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError("--canaries must be at least 1")
        if not self.repeats or min(self.repeats) < 1:
            raise UsageError("--canary-repeats: every count must be at least 1")
        if not PLACEHOLDER.search(self.format):
            raise UsageError(f"--canary-format {self.format!r} has no {{dK}} placeholder "
                             "(K random digits)")
        if not 1 <= self.digits <= MAX_DIGITS:
            raise UsageError(f"--canary-format: 1 to {MAX_DIGITS} random digits in all, "
                             f"not {self.digits}")
        if self.count * (len(self.repeats) + 1) > self.space // 2:
            raise UsageError(f"--canaries {self.count}: too many secrets for a space of "
                             f"{self.space} (--canary-format has too few digits)")

    @property
    def digits(self) -> int:
        return sum(int(k) for k in PLACEHOLDER.findall(self.format))

    @property
    def space(self) -> int:
        return 10 ** self.digits


def fill(fmt: str, secret: int, digits: int) -> str:
    """The format with the placeholders replaced, in order, by the zero-padded digits of
    `secret` (`fill("pin {d2}-{d2}", 123, 4)` -> "pin 01-23")."""
    text, used = str(secret).zfill(digits), 0

    def take(m: re.Match) -> str:
        nonlocal used
        used += int(m[1])
        return text[used - int(m[1]):used]
    return PLACEHOLDER.sub(take, fmt)


def draw_secrets(spec: CanarySpec) -> tuple[list[int], list[int]]:
    """Distinct secrets, a function of the spec alone: the inserted ones (repeat group by
    group, `count` each) and the controls."""
    rng = np.random.default_rng([spec.seed, 0xCA4A21])
    need, chosen, seen = spec.count * (len(spec.repeats) + 1), [], set()
    while len(chosen) < need:
        x = int(rng.integers(spec.space))
        if x not in seen:
            seen.add(x)
            chosen.append(x)
    cut = spec.count * len(spec.repeats)
    return chosen[:cut], chosen[cut:]


class Inserter:
    """Stands in for the train split's ShardWriter in the merge: passes the corpus documents
    on and adds the canary documents before the corpus document at each one's place; at
    `flush` the rest (those placed after the last document), then DATA/canaries.json."""

    def __init__(self, writer: Any, spec: CanarySpec, tok: Tokenizer, n_train: int,
                 dtype: str) -> None:
        self.writer, self.spec = writer, spec
        inserted, controls = draw_secrets(spec)
        rng = np.random.default_rng([spec.seed, 0x91ACE])
        self.records: list[dict[str, Any]] = []
        places = []
        for i, secret in enumerate(inserted):
            text = fill(spec.format, secret, spec.digits)
            record = {"secret": str(secret).zfill(spec.digits), "text": text,
                      "repeats": spec.repeats[i // spec.count], "documents": []}
            tokens = np.asarray(tok.encode(text) + [tok.eos_id], dtype=dtype)
            self.records.append(record)
            for place in rng.integers(0, n_train + 1, size=record["repeats"]):
                places.append((int(place), len(places), record, tokens, len(text.encode())))
        self.places = sorted(places, key=lambda p: p[:2])[::-1]  # next one last
        self.controls = [{"secret": str(s).zfill(spec.digits),
                          "text": fill(spec.format, s, spec.digits)} for s in controls]
        self.tokenizer_sha256 = tok.sha256
        self.seen = self.written = 0  # corpus documents passed on; documents written

    @property
    def shards(self) -> list:
        return self.writer.shards

    def _insert_up_to(self, place: float) -> None:
        while self.places and self.places[-1][0] <= place:
            _, _, record, tokens, n_bytes = self.places.pop()
            record["documents"].append(self.written)
            self.writer.add(tokens, n_bytes)
            self.written += 1

    def add(self, tokens: np.ndarray, n_bytes: int) -> None:
        self._insert_up_to(self.seen)
        self.writer.add(tokens, n_bytes)
        self.seen += 1
        self.written += 1

    def flush(self) -> None:
        self._insert_up_to(float("inf"))
        self.writer.flush()
        spec = self.spec
        (Path(self.writer.root) / FILE).write_text(json.dumps({
            "format": FORMAT, "version": 1, "template": spec.format, "digits": spec.digits,
            "space": spec.space, "seed": spec.seed, "repeats": list(spec.repeats),
            "tokenizer_sha256": self.tokenizer_sha256, "split": "train",
            "canaries": self.records, "controls": self.controls}, indent=1) + "\n")


def load(data_dir: str | Path) -> dict[str, Any] | None:
    """DATA/canaries.json, or None for a dataset made without --canaries."""
    path = Path(data_dir) / FILE
    if not path.exists():
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if not isinstance(found, dict) or found.get("format") != FORMAT:
        raise DataError(f"{path}: not a canaries file written by hvdlm.preprocess")
    return found
