"""Redaction of tool outputs before they are published: secrets by key name, PII as detected by `pii.find`."""

from __future__ import annotations

import re
from typing import Any

from .events import Event, TicketReceivedV1
from .pii.detect import find, replace

SECRET_KEYS = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|cookie|private[_-]?key|otp)", re.I
)


def redact_text(text: str) -> str:
    """`text` with each email, phone, card number, IBAN and postal address replaced by `[<kind>]`."""
    return replace(text, find(text), lambda span: f"[{span.kind}]")


def redact(value: Any, key: str = "") -> Any:
    """A copy of `value` with secret-named fields replaced and personal data masked in every string."""
    if key and SECRET_KEYS.search(key):
        return "[redacted]"
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_inbound(event: Event) -> Event:
    """The upstream ticket with its personal data masked. tickets.received is the one topic that
    carries PII (intake tokenizes it); consumers that keep or show events — the audit store, the
    console — keep this copy instead of the original."""
    if not isinstance(event, TicketReceivedV1):
        return event
    ticket = event.payload
    masked = ticket.model_copy(
        update={
            "subject": redact_text(ticket.subject),
            "body": redact_text(ticket.body),
            "customer": ticket.customer.model_copy(update={"email": redact_text(ticket.customer.email)}),
            "metadata": redact(ticket.metadata),
        }
    )
    return event.model_copy(update={"payload": masked})
