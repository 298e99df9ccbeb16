"""A ticket's status derived from its events: the one definition the CLI, console and tests share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FINAL = frozenset({"resolved", "escalated"})
# Statuses where the pipeline has nothing left to do on its own.
SETTLED = FINAL | {"awaiting_approval", "dead_lettered"}


def ticket_status(events: Iterable[Mapping[str, Any]]) -> str:
    """Events (dicts in the wire shape, in order) → received | in_progress | awaiting_approval |
    resolved | escalated | dead_lettered."""
    status = "unknown"
    waiting: set[str] = set()
    for event in events:
        kind, payload = event["type"], event.get("payload") or {}
        if kind == "task.finished":
            return str(payload["outcome"])
        if kind == "deadletter.recorded":
            status = "dead_lettered"
        elif kind == "ticket.received":
            status = "received"
        elif kind == "action.decided":
            action_id = payload["proposal"]["action_id"]
            if payload["verdict"] == "needs_approval":
                waiting.add(action_id)
            else:
                waiting.discard(action_id)
            status = "in_progress"
        else:
            status = "in_progress"
    return "awaiting_approval" if waiting else status
