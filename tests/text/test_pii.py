"""hvdlm.text.pii: each kind redacted, near misses kept, every find counted."""
from __future__ import annotations

import pytest

from hvdlm.text.pii import PII_KINDS, redact_pii

MUST_REDACT = {
    "email": ["Contact john.smith@example.org today", "mail jane_doe+news@mail.co.uk."],
    "phone": ["Call +1 (415) 555-0132 now", "call 415-555-0198", "(212) 555-0147",
              "+44 20 7946 0958", "Berlin 030 12345678", "tel 415.555.0142"],
    "ip": ["at 192.168.1.20", "ssh 10.0.0.5.", "v6 2001:db8:85a3::8a2e:370:7334",
           "fe80::1ff:fe23:4567:890a", "2001:0db8:0000:0000:0000:ff00:0042:8329"],
    "card": ["card 4111 1111 1111 1111", "4012-8888-8888-1881", "5555555555554444",
             "Amex 3782 822463 10005"],
}
MUST_STAY = [
    "Python 3.11.7", "released 2024-01-15", "ISBN 978-3-16-148410-0", "ISBN 9783161484100",
    "in 5 minutes", "order #12345", "room 101", "time 12:30:45", "2024-01-15 10:30:00",
    "pi 3.14159", "x = a@b", "@decorator", "MAC 00:1a:2b:3c:4d:5e", "a[::2]",
    "std::vector<int>", "not Luhn 4111 1111 1111 1112", "zip 94105", "1,000,000",
    "version 1.2.3", "call 555-0100", "x = 1000 2000 3000", "2024/01/15", "15.01.2024",
    "id 1234567890123", "0x7f000001", "sha 3f786850e387550fdab836ed7e6dc881de23001b",
]
PLACEHOLDER = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "card": "<CARD>"}


@pytest.mark.parametrize("kind,text", [(k, t) for k, ts in MUST_REDACT.items() for t in ts])
def test_redacts_each_kind(kind, text):
    out, counts = redact_pii(text)
    assert PLACEHOLDER[kind] in out
    assert counts[kind] == 1 and sum(counts.values()) == 1
    assert sum(c.isdigit() for c in out) <= 1, out  # nothing of the number survives ("v6")


@pytest.mark.parametrize("text", MUST_STAY)
def test_near_misses_stay(text):
    assert redact_pii(text) == (text, dict.fromkeys(PII_KINDS, 0))


def test_redaction_in_running_text_counts_all():
    text = ("Hi, I'm Ann (ann@corp.example.com, +1 415-555-0111). Our VPN is 172.16.4.1, "
            "paid with 4242 4242 4242 4242 on 2024-01-15 using Python 3.11.7.")
    out, counts = redact_pii(text)
    assert counts == {"email": 1, "phone": 1, "ip": 1, "card": 1}
    assert "2024-01-15" in out and "3.11.7" in out and "@" not in out
