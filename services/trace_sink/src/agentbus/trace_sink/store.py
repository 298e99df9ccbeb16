"""Audit store (schema `audit`): append every event once; read a ticket's chain back."""

from __future__ import annotations

from typing import Any

import asyncpg

INSERT = """
INSERT INTO audit.events
    (event_id, type, version, ticket_id, tenant_id, topic, kafka_partition, kafka_offset,
     occurred_at, event)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (event_id) DO NOTHING
"""


async def append(pool: asyncpg.Pool, rows: list[tuple[Any, ...]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(INSERT, rows)


async def ticket_events(conn: asyncpg.Pool | asyncpg.Connection, ticket_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        # Causal order: each event's step is one more than the event it answers; time breaks ties.
        """SELECT event, topic, recorded_at FROM audit.events WHERE ticket_id = $1
           ORDER BY (event->>'step')::int, occurred_at, seq""",
        ticket_id,
    )
    return [dict(r["event"], _topic=r["topic"], _recorded_at=r["recorded_at"]) for r in rows]
