"""Decision store (schema `policy`): one decision event per action, so redelivery gets the same one."""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg


class DecisionStore(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, ticket_id: str | None, event: dict[str, Any]) -> dict[str, Any]: ...


class PgDecisionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self.pool.fetchval("SELECT decision FROM policy.decisions WHERE action_id = $1", key)

    async def put(self, key: str, ticket_id: str | None, event: dict[str, Any]) -> dict[str, Any]:
        """Store unless present; returns whichever decision is stored (first writer wins)."""
        stored = await self.pool.fetchval(
            """
            WITH ins AS (
                INSERT INTO policy.decisions (action_id, ticket_id, decision) VALUES ($1, $2, $3)
                ON CONFLICT (action_id) DO NOTHING RETURNING decision
            )
            SELECT decision FROM ins
            UNION ALL SELECT decision FROM policy.decisions WHERE action_id = $1
            LIMIT 1
            """,
            key,
            ticket_id,
            event,
        )
        return stored
