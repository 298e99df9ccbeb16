"""Task state store: a Protocol and its asyncpg implementation (schema `planner`)."""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg

from .workflows import TaskState


class TaskStore(Protocol):
    async def load(self, ticket_id: str) -> tuple[TaskState, dict[str, Any]] | None: ...

    async def save(self, state: TaskState, memo: dict[str, Any]) -> None: ...


class PgTaskStore:
    """`memo` holds the last input event id and the events it produced, for redelivery."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def load(self, ticket_id: str) -> tuple[TaskState, dict[str, Any]] | None:
        row = await self.pool.fetchrow("SELECT * FROM planner.tasks WHERE ticket_id = $1", ticket_id)
        if row is None:
            return None
        context = dict(row["context"])
        memo = context.pop("_memo", {})
        state = TaskState(
            ticket_id=row["ticket_id"],
            tenant_id=row["tenant_id"],
            workflow=row["workflow"],
            state=row["state"],
            step=row["step"],
            pending_action_id=row["pending_action_id"],
            context=context,
        )
        return state, memo

    async def save(self, state: TaskState, memo: dict[str, Any]) -> None:
        await self.pool.execute(
            """
            INSERT INTO planner.tasks
                (ticket_id, tenant_id, workflow, state, step, pending_action_id, context, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, now())
            ON CONFLICT (ticket_id) DO UPDATE SET
                state = EXCLUDED.state, step = EXCLUDED.step,
                pending_action_id = EXCLUDED.pending_action_id,
                context = EXCLUDED.context, updated_at = now()
            """,
            state.ticket_id,
            state.tenant_id,
            state.workflow,
            state.state,
            state.step,
            state.pending_action_id,
            {**state.context, "_memo": memo},
        )
