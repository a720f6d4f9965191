"""PII redaction: e-mail addresses, phone numbers, IP addresses and Luhn-valid card numbers
become `<EMAIL>`, `<PHONE>`, `<IP>`, `<CARD>` (`hvdlm.preprocess --redact-pii`).

Pattern-based, so it lowers risk rather than anonymises: names, postal addresses and obfuscated
forms are not found (docs/security.md, "PII redaction limits").
"""
from __future__ import annotations

import ipaddress
import re
from typing import Callable

PII_KINDS = ("email", "phone", "ip", "card")

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_CARD = re.compile(r"(?<![\w-])(?:\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?"
                   r"|\d{4}([ -]?)\d{6}\2\d{5}|\d{13,19})(?![\w]|-\d)")
# Phone numbers: international (+CC ...), North American (555) 123-4567 / 555-123-4567, or
# national trunk-prefix style 030 1234567 / 020 7946 0958. Dates, versions and ISBNs do
# not have these shapes, which is what keeps them.
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,5}"
    r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"|0\d{1,4}[ /-]\d{3,8}(?:[ -]\d{3,4})?"
    r")(?![\w]|[.-]\d)")


def _card(m: re.Match) -> str | None:
    digits = re.sub(r"\D", "", m.group(0))
    total = 0  # the Luhn checksum, which real card numbers pass
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return "<CARD>" if digits[0] in "23456" and total % 10 == 0 else None


def _ipv6(m: re.Match) -> str | None:
    s = m.group(0)
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return None
    # "::", "a::b" and the like appear in code; a real address has digits and two groups.
    groups = [g for g in s.split(":") if g]
    return "<IP>" if len(groups) >= 2 and any(c.isdigit() for c in s) else None


def _phone(m: re.Match) -> str | None:
    n = sum(c.isdigit() for c in m.group(0))
    lo = 8 if m.group(0).startswith("+") else 9
    return "<PHONE>" if lo <= n <= 15 else None


_RULES = (  # order matters: e-mails can hold digits, cards look like phone numbers
    ("email", _EMAIL, lambda m: "<EMAIL>"),
    ("ip", _IPV6_CANDIDATE, _ipv6),
    ("ip", _IPV4, lambda m: "<IP>"),
    ("card", _CARD, _card),
    ("phone", _PHONE, _phone),
)
_QUICK = re.compile(r"@|\d|:")  # text without these cannot hold any PII we redact


def _apply(text: str, found: Callable[[str, str], None]) -> str:
    """`text` with every find replaced; `found(kind, matched text)` is called for each."""
    if not _QUICK.search(text):
        return text
    for kind, pattern, replace in _RULES:
        def sub(m: re.Match, kind=kind, replace=replace) -> str:
            out = replace(m)
            if out is None:
                return m.group(0)
            found(kind, m.group(0))
            return out
        text = pattern.sub(sub, text)
    return text


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """`text` with e-mails, phones, IPs and Luhn-valid card numbers replaced, and counts."""
    counts = dict.fromkeys(PII_KINDS, 0)

    def count(kind: str, _: str) -> None:
        counts[kind] += 1
    return _apply(text, count), counts


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) of everything `redact_pii` would replace, in the same order of
    rules (hvdlm.audit scans model samples with it)."""
    found: list[tuple[str, str]] = []
    _apply(text, lambda kind, s: found.append((kind, s)))
    return found
