"""Handoff and approval store (schema `escalation`)."""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg


class EscalationStore(Protocol):
    async def add_handoff(self, row: dict[str, Any]) -> str: ...

    async def add_approval(self, row: dict[str, Any]) -> str: ...


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

    async def add_approval(self, row: dict[str, Any]) -> str:
        await self.pool.execute(
            """INSERT INTO escalation.approvals
                   (id, action_id, ticket_id, tenant_id, proposal, preview, required_role, reason)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (action_id) DO NOTHING""",
            row["id"],
            row["action_id"],
            row["ticket_id"],
            row["tenant_id"],
            row["proposal"],
            row["preview"],
            row["required_role"],
            row["reason"],
        )
        return row["id"]
