"""What the pipeline has done, read from Postgres: side effects, stage state and outcomes, for tests
that must show a replay or a recovery changed none of it."""

from __future__ import annotations

from collections import Counter
from typing import Any

from agentbus.shared.db import connect
from agentbus.shared.status import ticket_status
from agentbus.trace_sink.store import ticket_events

# Every table a stage or a tool writes, with the columns a harmless redelivery may touch: the ledger
# counts delivery attempts, and rows keep when they were last looked at.
TABLES: dict[str, tuple[str, ...]] = {
    "sor.refunds": (),
    "sor.return_labels": (),
    "sor.ticket_replies": (),
    "sor.tickets": (),
    "sor.group_memberships": (),
    "sor.password_reset_links": (),
    "executor.effects": ("attempts", "updated_at"),
    "executor.capability_uses": (),
    "escalation.handoffs": (),
    "escalation.approvals": (),
    "policy.decisions": (),
    "policy.budget_usage": (),
    "policy.budget_reservations": ("updated_at",),
    "policy.task_usage": (),
    "policy.rate_windows": (),
    "planner.tasks": ("updated_at",),
    "pii.values": (),
}


async def snapshot(database_url: str) -> dict[str, list[str]]:
    """Each table's rows (without the volatile columns) as sorted JSON text."""
    conn = await connect(database_url)
    try:
        out = {}
        for table, volatile in TABLES.items():
            query = f"SELECT (to_jsonb(t) - $1::text[])::text AS row FROM {table} t"
            rows = await conn.fetch(query, volatile)
            out[table] = sorted(r["row"] for r in rows)
        return out
    finally:
        await conn.close()


async def outcomes(database_url: str, ticket_ids: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Per ticket: its status and every task.finished outcome recorded, in order."""
    conn = await connect(database_url)
    try:
        result = {}
        for tid in ticket_ids:
            events = await ticket_events(conn, tid)
            finished = [e["payload"]["outcome"] for e in events if e["type"] == "task.finished"]
            result[tid] = (ticket_status(events), finished)
        return result
    finally:
        await conn.close()


async def audit_counts(database_url: str) -> Counter[str]:
    """Stored events per type."""
    conn = await connect(database_url)
    try:
        rows = await conn.fetch("SELECT type, count(*) AS n FROM audit.events GROUP BY type")
        return Counter({r["type"]: r["n"] for r in rows})
    finally:
        await conn.close()


def diff(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, Any]:
    """Tables whose rows changed, with the rows gone and the rows new (empty when nothing changed)."""
    changed = {}
    for table in before:
        old, new = set(before[table]), set(after[table])
        if old != new or len(before[table]) != len(after[table]):
            changed[table] = {"gone": sorted(old - new)[:5], "new": sorted(new - old)[:5]}
    return changed
