"""Effect ledger (schema `executor`): one effect per idempotency key, claimed before the call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg


@dataclass(frozen=True)
class Effect:
    key: str
    status: str  # started | succeeded | failed | unknown
    result: dict[str, Any] | None
    error: str | None
    claimed_now: bool


class EffectLedger(Protocol):
    async def claim(self, key: str, action_id: str, tool: str) -> Effect: ...

    async def settle(
        self, key: str, status: str, result: dict[str, Any] | None, error: str | None
    ) -> None: ...

    async def use_capability(self, jti: str, action_id: str, decision_event_id: str) -> bool: ...

    async def capability_user(self, jti: str) -> str | None: ...


class PgEffectLedger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def claim(self, key: str, action_id: str, tool: str) -> Effect:
        row = await self.pool.fetchrow(
            """INSERT INTO executor.effects (idempotency_key, action_id, tool, status)
               VALUES ($1, $2, $3, 'started') ON CONFLICT (idempotency_key) DO NOTHING
               RETURNING status""",
            key,
            action_id,
            tool,
        )
        if row is not None:
            return Effect(key, "started", None, None, claimed_now=True)
        row = await self.pool.fetchrow(
            """UPDATE executor.effects SET attempts = attempts + 1, updated_at = now()
               WHERE idempotency_key = $1 RETURNING status, result, error""",
            key,
        )
        return Effect(key, row["status"], row["result"], row["error"], claimed_now=False)

    async def settle(self, key: str, status: str, result: dict[str, Any] | None, error: str | None) -> None:
        await self.pool.execute(
            """UPDATE executor.effects SET status = $2, result = $3, error = $4, updated_at = now()
               WHERE idempotency_key = $1""",
            key,
            status,
            result,
            error,
        )

    async def use_capability(self, jti: str, action_id: str, decision_event_id: str) -> bool:
        """Record the capability's use; False when another event already used it (a replay).
        The same decision event delivered again is not a replay: at-least-once delivery."""
        first_event = await self.pool.fetchval(
            """WITH ins AS (
                   INSERT INTO executor.capability_uses (jti, action_id, decision_event_id)
                   VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING RETURNING decision_event_id
               )
               SELECT decision_event_id FROM ins
               UNION ALL SELECT decision_event_id FROM executor.capability_uses WHERE jti = $1
               LIMIT 1""",
            jti,
            action_id,
            decision_event_id,
        )
        return bool(first_event == decision_event_id)

    async def capability_user(self, jti: str) -> str | None:
        """The decision event that used this capability, if any (read only: nothing is claimed)."""
        used_by: str | None = await self.pool.fetchval(
            "SELECT decision_event_id FROM executor.capability_uses WHERE jti = $1", jti
        )
        return used_by
