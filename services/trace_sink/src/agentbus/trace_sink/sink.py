"""Turns raw Kafka records into audit rows; records that are not events are left to their owners."""

from __future__ import annotations

import logging

from agentbus.shared.events import DecodeError, decode
from agentbus.shared.redaction import redact_inbound

from .store import AuditRow

log = logging.getLogger("agentbus.trace_sink")


def to_row(topic: str, partition: int, offset: int, value: bytes | None) -> AuditRow | None:
    """One audit row, or None for bytes that are not an event (the owning consumer dead-letters
    those; the sink records the dead-letter event instead of a second copy)."""
    try:
        # The upstream ticket is the one event with raw PII: the store keeps it masked.
        event = redact_inbound(decode(value or b""))
    except DecodeError as exc:
        log.info("not a valid event at %s@%s:%s (%s); left to its consumer", topic, partition, offset, exc)
        return None
    return AuditRow(
        event.event_id,
        event.type,
        event.version,
        event.ticket_id,
        event.tenant_id,
        topic,
        partition,
        offset,
        event.occurred_at,
        event.model_dump(mode="json"),
    )
