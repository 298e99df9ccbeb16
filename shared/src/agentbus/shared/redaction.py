"""Redaction of tool outputs before they are published: secrets by key name, PII by pattern."""

from __future__ import annotations

import re
from typing import Any

SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|cookie|private[_-]?key|otp)", re.I
)
EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
PHONE = re.compile(r"(?<!\w)\+?\d[\d ().-]{7,}\d(?!\w)")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")


def redact_text(text: str) -> str:
    text = EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    text = IBAN.sub("[iban]", text)
    text = CARD.sub("[card]", text)
    return PHONE.sub("[phone]", text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` with secret-named fields replaced and emails, card numbers, IBANs and
    phone numbers masked in every string."""
    if key and SECRET_KEYS.search(key):
        return "[redacted]"
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
