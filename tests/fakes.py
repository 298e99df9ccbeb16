"""In-memory stand-ins for unit and component tests of pure logic (never for integration tests)."""

from __future__ import annotations

from typing import Any

from agentbus.planner.workflows import TaskState
from agentbus.shared.bus import Bus


class MemoryTaskStore:
    """The planner's task store, in a dict."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[TaskState, dict[str, Any]]] = {}

    async def load(self, ticket_id: str) -> tuple[TaskState, dict[str, Any]] | None:
        return self.rows.get(ticket_id)

    async def save(self, state: TaskState, memo: dict[str, Any]) -> None:
        self.rows[state.ticket_id] = (state, memo)


class ScriptedClient:
    """A model client that answers from a list of Completions (or raises ModelUnavailable), and
    records what it was sent. For unit tests of planner logic; integration tests use the real
    `openai` client against agentbus.cli.model_server."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = list(replies)
        self.sent: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]] | None]] = []

    async def complete(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> Any:
        self.sent.append((model, [dict(m) for m in messages], tools))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def as_every_stage(bus: Bus) -> Bus:
    """A component test's one bus on the in-memory broker also sends what other stages would send
    it, so it may publish on any topic (the topic-map check is tested in tests/unit/test_acl_plan.py)."""
    bus.grants = None
    return bus
