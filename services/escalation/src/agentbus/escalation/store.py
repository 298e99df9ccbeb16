"""Handoff and approval store (schema `escalation`)."""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg


class EscalationStore(Protocol):
    async def add_handoff(self, row: dict[str, Any]) -> str: ...

    async def add_approval(self, row: dict[str, Any], ttl_s: float) -> str: ...


class ApprovalStore(Protocol):
    async def list_approvals(self, status: str | None, limit: int) -> list[dict[str, Any]]: ...

    async def get_approval(self, approval_id: str) -> dict[str, Any] | None: ...

    async def decide(
        self, approval_id: str, status: str, approver: str | None, reason: str, outcome_event: dict[str, Any]
    ) -> dict[str, Any] | None: ...

    async def due_for_expiry(self, limit: int) -> list[dict[str, Any]]: ...

    async def unpublished(self, limit: int) -> list[dict[str, Any]]: ...

    async def mark_published(self, approval_id: str) -> None: ...


class PgEscalationStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def add_handoff(self, row: dict[str, Any]) -> str:
        """Insert unless this ticket already has a handoff for this reason; returns its id."""
        await self.pool.execute(
            """INSERT INTO escalation.handoffs
                   (id, ticket_id, tenant_id, reason, summary, details, rule_ids)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
            row["id"],
            row["ticket_id"],
            row["tenant_id"],
            row["reason"],
            row["summary"],
            row["details"],
            row["rule_ids"],
        )
        return await self.pool.fetchval(
            "SELECT id FROM escalation.handoffs WHERE ticket_id = $1 AND reason = $2",
            row["ticket_id"],
            row["reason"],
        )

    async def add_approval(self, row: dict[str, Any], ttl_s: float) -> str:
        """Record a pending approval that expires `ttl_s` from now; a redelivery changes nothing."""
        await self.pool.execute(
            """INSERT INTO escalation.approvals
                   (id, action_id, ticket_id, tenant_id, proposal, preview, required_role, reason,
                    decision_event, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                       now() + make_interval(secs => $10::double precision))
               ON CONFLICT (action_id) DO NOTHING""",
            row["id"],
            row["action_id"],
            row["ticket_id"],
            row["tenant_id"],
            row["proposal"],
            row["preview"],
            row["required_role"],
            row["reason"],
            row["decision_event"],
            ttl_s,
        )
        return str(row["id"])

    async def list_approvals(self, status: str | None, limit: int = 200) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT * FROM escalation.approvals WHERE $1::text IS NULL OR status = $1
               ORDER BY created_at DESC, id LIMIT $2""",
            status,
            limit,
        )
        return [dict(r) for r in rows]

    async def get_approval(self, approval_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow("SELECT * FROM escalation.approvals WHERE id = $1", approval_id)
        return dict(row) if row else None

    async def decide(
        self, approval_id: str, status: str, approver: str | None, reason: str, outcome_event: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Move a pending approval to `status` with the event that announces it, in one statement.

        Only a row that is still pending wins: of two concurrent decisions exactly one updates it,
        and an approval is decided only before it expires, an expiry only after."""
        expiring = status == "expired"
        row = await self.pool.fetchrow(
            """UPDATE escalation.approvals
               SET status = $2, approver = $3, decided_reason = $4, decided_at = now(),
                   outcome_event = $5, published = false
               WHERE id = $1 AND status = 'pending' AND (expires_at <= now()) = $6
               RETURNING *""",
            approval_id,
            status,
            approver,
            reason,
            outcome_event,
            expiring,
        )
        return dict(row) if row else None

    async def due_for_expiry(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT * FROM escalation.approvals WHERE status = 'pending' AND expires_at <= now()
               ORDER BY expires_at LIMIT $1""",
            limit,
        )
        return [dict(r) for r in rows]

    async def unpublished(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT * FROM escalation.approvals WHERE status <> 'pending' AND NOT published
               ORDER BY decided_at LIMIT $1""",
            limit,
        )
        return [dict(r) for r in rows]

    async def mark_published(self, approval_id: str) -> None:
        await self.pool.execute("UPDATE escalation.approvals SET published = true WHERE id = $1", approval_id)
