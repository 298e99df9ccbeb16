"""Read-only queries on the audit store (schema `audit`): new events by chain position, and the stored
events of a batch of tickets."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg
from agentbus.shared.redrive import Location, StoredEvent


class Seen(NamedTuple):
    position: int
    ticket_id: str
    recorded_at: datetime


async def events_after(pool: asyncpg.Pool, position: int, limit: int = 5000) -> list[Seen]:
    """Ticket events stored after `position` (the chain index is gap-free and indexed)."""
    rows = await pool.fetch(
        """SELECT position, ticket_id, recorded_at FROM audit.events
           WHERE position > $1 AND ticket_id IS NOT NULL ORDER BY position LIMIT $2""",
        position,
        limit,
    )
    return [Seen(r["position"], r["ticket_id"], r["recorded_at"]) for r in rows]


async def events_of(pool: asyncpg.Pool, ticket_ids: Sequence[str]) -> dict[str, list[StoredEvent]]:
    """Each ticket's stored events in causal order (as trace_sink.store.ticket_events orders them, but
    for many tickets in one query: the first pass after a start looks at every ticket)."""
    rows = await pool.fetch(
        """SELECT position, type, ticket_id, event, topic, kafka_partition, kafka_offset
           FROM audit.events WHERE ticket_id = ANY($1::text[])
           ORDER BY ticket_id, (event->>'step')::int, occurred_at, position""",
        list(ticket_ids),
    )
    out: dict[str, list[StoredEvent]] = defaultdict(list)
    for r in rows:
        where = Location(r["topic"], r["kafka_partition"], r["kafka_offset"])
        out[r["ticket_id"]].append(StoredEvent(r["position"], r["type"], r["ticket_id"], r["event"], where))
    return out
