"""Retention of one tenant's records: purge expired tickets' events from the audit chain (their digests
stay), shred data subjects left with no live ticket, delete the tickets' operational rows; one chain
record names it all."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from agentbus.shared.audit import RETENTION_TYPE, instant
from agentbus.shared.events.envelope import new_event_id
from agentbus.shared.pii import forget_subject
from agentbus.shared.retention import UNCLASSIFIED, RetentionPolicy

from .store import CHAIN_LOCK, AuditRow, append_locked

# The retention record is written by this job, not read from Kafka: partition and offset -1 say so.
RETENTION_TOPIC = "agentbus.audit.retention"

# Per live ticket of the tenant: when its last event was recorded, its workflow, how many of its events
# can be purged (format 2) or not (format 1, whose hash covers the event), and its data subjects.
TICKETS = """
SELECT ticket_id,
       max(recorded_at) AS last,
       max(event #>> '{payload,workflow}') FILTER (WHERE type = 'task.classified') AS workflow,
       count(*) FILTER (WHERE event IS NOT NULL AND chain_version = 2) AS purgeable,
       count(*) FILTER (WHERE event IS NOT NULL AND chain_version = 1) AS format1,
       array_agg(DISTINCT coalesce(event #>> '{payload,customer,id}', event #>> '{payload,customer_id}'))
           FILTER (WHERE type IN ('ticket.received', 'task.classified') AND event IS NOT NULL) AS subjects
FROM audit.events
WHERE tenant_id = $1 AND ticket_id IS NOT NULL
GROUP BY ticket_id
HAVING bool_or(event IS NOT NULL)
"""
# When each of the tenant's data subjects last had personal data stored.
SUBJECTS = """
SELECT k.subject_id, greatest(k.created_at, max(v.created_at)) AS newest
FROM pii.subject_keys k LEFT JOIN pii.values v USING (tenant_id, subject_id)
WHERE k.tenant_id = $1
GROUP BY k.subject_id, k.created_at
"""
# Rows other services keep per ticket that hold ticket content: task context, handoff summaries,
# approval previews. policy.decisions and executor.effects stay: they are the guards that make a
# redelivered proposal or action a no-op, and they hold decisions and redacted results, not ticket text.
OPERATIONAL = ("planner.tasks", "escalation.handoffs", "escalation.approvals")


@dataclass
class TenantOutcome:
    tenant: str
    retention_days: dict[str, int]  # by workflow, UNCLASSIFIED for the rest (only it, with a tenant override)
    cutoffs: dict[str, datetime]
    tickets: int = 0  # expired
    rows_purged: int = 0
    rows_kept: int = 0  # format-1 rows of expired tickets: their hash covers the event, so they stay
    subjects_shredded: int = 0
    values_shredded: int = 0
    operational: dict[str, int] = field(default_factory=dict)  # table -> rows deleted
    record_id: str | None = None  # the retention record's event id; None when nothing expired

    @property
    def cutoff(self) -> datetime:
        """The latest cutoff that applied: every purged event was recorded before it."""
        return max(self.cutoffs.values())

    @property
    def changed(self) -> bool:
        return bool(self.rows_purged or self.subjects_shredded or any(self.operational.values()))


class _DryRun(Exception):
    pass


async def tenants(conn: asyncpg.Connection, policy: RetentionPolicy) -> list[str]:
    """Every tenant with audit rows or personal data, and every tenant the tenants file names."""
    rows = await conn.fetch(
        "SELECT DISTINCT tenant_id FROM audit.events WHERE tenant_id IS NOT NULL"
        " UNION SELECT DISTINCT tenant_id FROM pii.subject_keys"
    )
    return sorted({r["tenant_id"] for r in rows} | set(policy.tenants))


async def apply(
    pool: asyncpg.Pool,
    policy: RetentionPolicy,
    tenant: str,
    now: datetime,
    *,
    actor: str,
    dry_run: bool = False,
) -> TenantOutcome:
    """Apply retention to one tenant in one transaction, holding the chain lock so that no event lands
    meanwhile. A dry run does all of it, then rolls back: it reports exactly what a run would do."""
    cutoffs = policy.cutoffs(tenant, now)
    days = (
        {UNCLASSIFIED: policy.tenants[tenant]}
        if tenant in policy.tenants
        else dict(policy.workflows) | {UNCLASSIFIED: policy.longest}
    )
    outcome = TenantOutcome(tenant, days, cutoffs)
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", CHAIN_LOCK)
                await _apply(conn, policy, outcome, now, actor)
                if dry_run:
                    raise _DryRun
        except _DryRun:
            outcome.record_id = None  # rolled back with the rest
    return outcome


async def _apply(
    conn: asyncpg.Connection, policy: RetentionPolicy, outcome: TenantOutcome, now: datetime, actor: str
) -> None:
    tenant, cutoffs = outcome.tenant, outcome.cutoffs
    expired: list[str] = []
    live_subjects: set[str] = set()
    expired_subjects: set[str] = set()
    for row in await conn.fetch(TICKETS, tenant):
        cutoff = cutoffs.get(row["workflow"], cutoffs[UNCLASSIFIED])
        subjects = {s for s in row["subjects"] or () if s}
        if row["last"] < cutoff:
            expired.append(row["ticket_id"])
            expired_subjects |= subjects
            outcome.rows_purged += row["purgeable"]
            outcome.rows_kept += row["format1"]
        else:
            live_subjects |= subjects
    outcome.tickets = len(expired)

    # A subject is shredded once no live ticket names it. The age check keeps a subject whose newest
    # ticket is still on its way to the audit store; one the store never saw waits the longest retention.
    shred = []
    for row in await conn.fetch(SUBJECTS, tenant):
        subject = row["subject_id"]
        limit = outcome.cutoff if subject in expired_subjects else cutoffs[UNCLASSIFIED]
        if subject not in live_subjects and row["newest"] < limit:
            shred.append(subject)
    for subject in sorted(shred):
        outcome.values_shredded += await forget_subject(conn, tenant, subject)
    outcome.subjects_shredded = len(shred)

    for table in OPERATIONAL:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE tenant_id = $1 AND ticket_id = ANY($2::text[])", tenant, expired
        )
        outcome.operational[table] = int(status.split()[-1])

    if not outcome.changed:
        return
    role = await conn.fetchval("SELECT current_user")
    record = _record(outcome, now, actor, role)
    # The record goes in first: audit.purge_expired refuses to purge without it.
    await append_locked(conn, [record])
    outcome.record_id = record.event_id
    # It purges exactly the rows the record counts, or raises and nothing of this run stays.
    await conn.execute("SELECT audit.purge_expired($1, $2::text[])", record.event_id, expired)


def _record(outcome: TenantOutcome, now: datetime, actor: str, role: str) -> AuditRow:
    """The chain row that covers this run's purge: `verify` accepts a purged event only when a later
    record of its tenant has a cutoff after the event was recorded."""
    occurred_at = datetime.now(UTC)
    event: dict[str, Any] = {
        "event_id": new_event_id(),
        "type": RETENTION_TYPE,
        "version": 1,
        "occurred_at": instant(occurred_at),
        "ticket_id": None,
        "tenant_id": outcome.tenant,
        "causation_id": None,
        "step": 0,
        "producer": {"service": "retention", "version": "1", "instance": socket.gethostname()},
        "traceparent": None,
        "policy_version": None,
        "prompt_version": None,
        "model": None,
        "payload": {
            "tenant": outcome.tenant,
            "now": instant(now),
            "cutoff": instant(outcome.cutoff),
            "cutoffs": {w: instant(c) for w, c in outcome.cutoffs.items()},
            "retention_days": outcome.retention_days,
            "tickets": outcome.tickets,
            "rows_purged": outcome.rows_purged,
            "rows_kept_format1": outcome.rows_kept,
            # Counts only: the chain is kept forever, so it names no data subject.
            "subjects_shredded": outcome.subjects_shredded,
            "operational_rows_deleted": outcome.operational,
            "actor": actor,
            "db_role": role,
        },
    }
    return AuditRow(
        event["event_id"],
        RETENTION_TYPE,
        1,
        None,
        outcome.tenant,
        RETENTION_TOPIC,
        -1,
        -1,
        occurred_at,
        event,
    )
