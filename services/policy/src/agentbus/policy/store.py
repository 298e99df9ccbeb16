"""Policy store (schema `policy`): decisions (one per action or approval), task limits, rate windows
and budgets, all changed in the decision's own transaction so replicas cannot overshoot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from .bundles import Bundle

TASK_LIMITS = ("tool_calls", "model_calls", "tokens", "spend_microdollars")


class AlreadyDecided(Exception):
    """Another replica (or an earlier delivery) stored a decision first; use that one."""


class PolicyTx:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def count_task(self, ticket_id: str, usage: dict[str, int], bundle: Bundle) -> str | None:
        """Add this proposal to its task's usage; the first limit now exceeded, or None."""
        row = await self.conn.fetchrow(
            """INSERT INTO policy.task_usage AS u
                   (ticket_id, tool_calls, model_calls, tokens, spend_microdollars)
               VALUES ($1, 1, $2, $3, $4)
               ON CONFLICT (ticket_id) DO UPDATE SET
                   tool_calls = u.tool_calls + 1, model_calls = u.model_calls + $2,
                   tokens = u.tokens + $3, spend_microdollars = u.spend_microdollars + $4
               RETURNING tool_calls, model_calls, tokens, spend_microdollars""",
            ticket_id,
            usage.get("model_calls", 0),
            usage.get("tokens", 0),
            usage.get("spend_microdollars", 0),
        )
        for name in TASK_LIMITS:
            limit = bundle.limits.get(name)
            if limit is not None and row[name] > limit:
                return name
        return None

    async def take_rate(self, tenant_id: str, tool: str, per_minute: int) -> bool:
        calls = await self.conn.fetchval(
            """INSERT INTO policy.rate_windows AS w (tenant_id, tool, window_start, calls)
               VALUES ($1, $2, date_trunc('minute', now()), 1)
               ON CONFLICT (tenant_id, tool, window_start) DO UPDATE SET calls = w.calls + 1
               WHERE w.calls < $3
               RETURNING calls""",
            tenant_id,
            tool,
            per_minute,
        )
        return calls is not None

    async def reserve(self, action_id: str, tenant_id: str, budget: str, amount: int, per_day: int) -> bool:
        """Reserve `amount` of today's budget for this action (idempotent per action)."""
        if await self.conn.fetchval(
            "SELECT 1 FROM policy.budget_reservations WHERE action_id = $1 AND status <> 'released'",
            action_id,
        ):
            return True
        await self.conn.execute(
            """INSERT INTO policy.budget_usage (tenant_id, day, budget) VALUES ($1, current_date, $2)
               ON CONFLICT DO NOTHING""",
            tenant_id,
            budget,
        )
        # The row lock taken by this UPDATE serialises every replica reserving the same budget.
        used = await self.conn.fetchval(
            """UPDATE policy.budget_usage SET used = used + $3
               WHERE tenant_id = $1 AND day = current_date AND budget = $2 AND used + $3 <= $4
               RETURNING used""",
            tenant_id,
            budget,
            amount,
            per_day,
        )
        if used is None:
            return False
        await self.conn.execute(
            """INSERT INTO policy.budget_reservations (action_id, tenant_id, day, budget, amount, status)
               VALUES ($1, $2, current_date, $3, $4, 'reserved')
               ON CONFLICT (action_id) DO UPDATE SET status = 'reserved', amount = EXCLUDED.amount,
                   day = EXCLUDED.day, updated_at = now()""",
            action_id,
            tenant_id,
            budget,
            amount,
        )
        return True

    async def put(self, key: str, ticket_id: str | None, event: dict[str, Any]) -> None:
        inserted = await self.conn.fetchval(
            """INSERT INTO policy.decisions (action_id, ticket_id, decision) VALUES ($1, $2, $3)
               ON CONFLICT (action_id) DO NOTHING RETURNING 1""",
            key,
            ticket_id,
            event,
        )
        if inserted is None:
            raise AlreadyDecided(key)


class PgPolicyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self.pool.fetchval("SELECT decision FROM policy.decisions WHERE action_id = $1", key)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PolicyTx]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield PolicyTx(conn)

    async def settle(self, action_id: str, succeeded: bool) -> None:
        """After execution: a success settles the reservation, anything else gives it back."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                """UPDATE policy.budget_reservations SET status = $2, updated_at = now()
                   WHERE action_id = $1 AND status = 'reserved'
                   RETURNING tenant_id, day, budget, amount""",
                action_id,
                "settled" if succeeded else "released",
            )
            if row is not None and not succeeded:
                await conn.execute(
                    """UPDATE policy.budget_usage SET used = used - $4
                       WHERE tenant_id = $1 AND day = $2 AND budget = $3""",
                    row["tenant_id"],
                    row["day"],
                    row["budget"],
                    row["amount"],
                )
