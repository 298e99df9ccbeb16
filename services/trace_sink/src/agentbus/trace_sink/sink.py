"""Turns raw Kafka records into audit rows; records that are not events are left to their owners."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from .store import parse_time

log = logging.getLogger("agentbus.trace_sink")


def to_row(topic: str, partition: int, offset: int, value: bytes | None) -> tuple[Any, ...] | None:
    """One audit row, or None for bytes that are not an event (the owning consumer dead-letters
    those; the sink records the dead-letter event instead of a second copy)."""
    try:
        event = orjson.loads(value or b"")
        return (
            event["event_id"],
            event["type"],
            int(event["version"]),
            event.get("ticket_id"),
            event.get("tenant_id"),
            topic,
            partition,
            offset,
            parse_time(event["occurred_at"]),
            event,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        log.info("not an event at %s@%s:%s; left to its consumer", topic, partition, offset)
        return None
