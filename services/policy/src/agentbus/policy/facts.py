"""Policy information point: facts about the resources an action touches, read from the systems of
record by the decider itself. A planner's claims are never trusted for a decision."""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg
from agentbus.shared.events import Proposal


class FactSource(Protocol):
    async def facts(self, proposal: Proposal) -> dict[str, Any]: ...


class PgFacts:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def facts(self, proposal: Proposal) -> dict[str, Any]:
        args, out = proposal.args, {}
        if isinstance(order_id := args.get("order_id"), str):
            row = await self.pool.fetchrow(
                """SELECT o.tenant_id, o.customer_id, o.amount_cents, o.currency, o.status,
                          COALESCE((SELECT sum(r.amount_cents) FROM sor.refunds r
                                    WHERE r.order_id = o.id), 0)::bigint AS refunded_cents
                   FROM sor.orders o WHERE o.id = $1""",
                order_id,
            )
            out["order"] = {"found": False} if row is None else {"found": True, **dict(row)}
        if isinstance(user_id := args.get("user_id"), str):
            row = await self.pool.fetchrow(
                "SELECT tenant_id, status FROM sor.directory_users WHERE id = $1", user_id
            )
            out["user"] = {"found": False} if row is None else {"found": True, **dict(row)}
        if isinstance(group_id := args.get("group_id"), str):
            row = await self.pool.fetchrow(
                "SELECT tenant_id, admin FROM sor.directory_groups WHERE id = $1", group_id
            )
            out["group"] = {"found": False} if row is None else {"found": True, **dict(row)}
        return out
