"""Audit store (schema `audit`): add each event to the hash chain once; read a ticket's events back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import orjson
from agentbus.shared.audit import (
    CHAIN_VERSION,
    GENESIS,
    ChainHead,
    chain_header,
    event_digest,
    link_hash,
    row_header,
)

# Held for the whole transaction by every writer, so replicas extend the chain one at a time. The
# UNIQUE(position) constraint would still refuse a fork; the lock saves the retry.
CHAIN_LOCK = 7_364_212

COLUMNS = (
    "event_id",
    "type",
    "version",
    "ticket_id",
    "tenant_id",
    "topic",
    "kafka_partition",
    "kafka_offset",
    "occurred_at",
    "recorded_at",
    "event",
    "position",
    "prev_hash",
    "hash",
    "chain_version",
    "event_digest",
)
# asyncpg's COPY is binary, and it has no binary jsonb encoder. So the event is staged as the text
# Postgres will parse, and cast once on the way in.
STAGING = """
CREATE TEMP TABLE IF NOT EXISTS audit_staging (
    event_id text, type text, version integer, ticket_id text, tenant_id text, topic text,
    kafka_partition integer, kafka_offset bigint, occurred_at timestamptz, recorded_at timestamptz,
    event text, position bigint, prev_hash bytea, hash bytea, chain_version smallint, event_digest bytea
) ON COMMIT DELETE ROWS
"""
FROM_STAGING = f"""
INSERT INTO audit.events ({", ".join(COLUMNS)})
SELECT {", ".join(f"{c}::jsonb" if c == "event" else c for c in COLUMNS)}
FROM audit_staging ORDER BY position
"""


class AuditRow(NamedTuple):
    event_id: str
    type: str
    version: int
    ticket_id: str | None
    tenant_id: str | None
    topic: str
    kafka_partition: int
    kafka_offset: int
    occurred_at: datetime
    event: dict[str, Any]


async def append(
    pool: asyncpg.Pool, rows: Sequence[AuditRow], recorded_at: datetime | None = None
) -> ChainHead | None:
    """Add the events not yet stored to the chain, in the order given; returns the new head, or None
    when every event was already there (a redelivery adds nothing, not even a link). `recorded_at`
    is now unless given (tests write history with it)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
        return await append_locked(conn, rows, recorded_at)


async def append_locked(
    conn: asyncpg.Connection, rows: Sequence[AuditRow], recorded_at: datetime | None = None
) -> ChainHead | None:
    """append() inside the caller's transaction, which holds CHAIN_LOCK. No savepoint, so the rows'
    xmin is the caller's transaction (audit.purge_expired checks its retention record by that)."""
    position, prev = await _head(conn)
    present = await conn.fetch(
        "SELECT event_id FROM audit.events WHERE event_id = ANY($1::text[])",
        list({r.event_id for r in rows}),
    )
    seen = {r["event_id"] for r in present}
    fresh = []
    for row in rows:  # the first copy of an id in the batch wins
        if row.event_id not in seen:
            seen.add(row.event_id)
            fresh.append(row)
    if not fresh:
        return None
    recorded_at = recorded_at or datetime.now(UTC)
    records = []
    for row in fresh:
        position += 1
        text = orjson.dumps(row.event)
        # Hash what Postgres will store: the event as this text parses, not the Python object.
        digest = event_digest(orjson.loads(text))
        header = chain_header(
            position=position,
            topic=row.topic,
            kafka_partition=row.kafka_partition,
            kafka_offset=row.kafka_offset,
            recorded_at=recorded_at,
            event_id=row.event_id,
            event_type=row.type,
            event_version=row.version,
            ticket_id=row.ticket_id,
            tenant_id=row.tenant_id,
            occurred_at=row.occurred_at,
            digest=digest,
        )
        link = link_hash(prev, header)
        records.append((*row[:9], recorded_at, text.decode(), position, prev, link, CHAIN_VERSION, digest))
        prev = link
    await conn.execute(STAGING)
    await conn.copy_records_to_table("audit_staging", records=records, columns=COLUMNS)
    await conn.execute(FROM_STAGING)
    return ChainHead(position, prev)


async def seal(pool: asyncpg.Pool) -> int:
    """Hash the rows written before the chain existed (migration 007); returns how many."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
        before = await conn.fetchval("SELECT count(*) FROM audit.events WHERE hash IS NULL")
        await _head(conn)
        return int(before)


async def _head(conn: asyncpg.Connection) -> tuple[int, bytes]:
    """The chain's last position and hash, sealing pre-chain rows first; caller holds CHAIN_LOCK."""
    row = await conn.fetchrow("SELECT position, hash FROM audit.events ORDER BY position DESC LIMIT 1")
    if row is None:
        return 0, GENESIS
    if row["hash"] is None:
        # Appends come only after sealing, so an unhashed tail means unsealed rows from before 007.
        return await _seal(conn)
    return row["position"], row["hash"]


async def _seal(conn: asyncpg.Connection) -> tuple[int, bytes]:
    """Hash the unsealed tail in chain format 2 (it was written without a digest, so it gets one now)."""
    start = await conn.fetchval("SELECT min(position) FROM audit.events WHERE hash IS NULL")
    prev = await conn.fetchval("SELECT hash FROM audit.events WHERE position = $1", start - 1) or GENESIS
    position = start - 1
    while True:
        rows = await conn.fetch(
            """SELECT position, event_id, type, version, ticket_id, tenant_id, topic, kafka_partition,
                      kafka_offset, occurred_at, recorded_at, event
               FROM audit.events WHERE position > $1 ORDER BY position LIMIT 1000""",
            position,
        )
        if not rows:
            return position, prev
        sealed = []
        for row in rows:
            position = row["position"]
            digest = event_digest(row["event"])
            link = link_hash(prev, row_header(row, digest))
            sealed.append((position, prev, link, CHAIN_VERSION, digest))
            prev = link
        await conn.executemany(
            """UPDATE audit.events SET prev_hash = $2, hash = $3, chain_version = $4, event_digest = $5
               WHERE position = $1 AND hash IS NULL""",
            sealed,
        )


async def ticket_events(conn: asyncpg.Pool | asyncpg.Connection, ticket_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        # Causal order: each event's step is one more than the event it answers; time breaks ties.
        # Purged rows (event NULL) are gone for readers: retention purges a ticket whole.
        """SELECT event, topic, recorded_at FROM audit.events WHERE ticket_id = $1 AND event IS NOT NULL
           ORDER BY (event->>'step')::int, occurred_at, seq""",
        ticket_id,
    )
    return [dict(r["event"], _topic=r["topic"], _recorded_at=r["recorded_at"]) for r in rows]
