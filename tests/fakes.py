"""In-memory stand-ins for unit and component tests of pure logic (never for integration tests)."""

from __future__ import annotations

from typing import Any

from agentbus.planner.workflows import TaskState


class MemoryTaskStore:
    """The planner's task store, in a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[TaskState, dict[str, Any]]] = {}

    async def load(self, ticket_id: str) -> tuple[TaskState, dict[str, Any]] | None:
        return self.rows.get(ticket_id)

    async def save(self, state: TaskState, memo: dict[str, Any]) -> None:
        self.rows[state.ticket_id] = (state, memo)
