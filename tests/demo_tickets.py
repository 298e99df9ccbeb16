"""The demo tickets (agentbus.cli.demo) as events to publish, with each one's ticket id by label."""

from __future__ import annotations

import uuid
from typing import Any

from agentbus.cli import client, demo


def demo_events() -> tuple[list[Any], dict[str, str]]:
    """(events for client.publish, {label: ticket id}); the malformed one goes as raw bytes."""
    events: list[Any] = []
    ids: dict[str, str] = {}
    for label, body, _expected in demo.demo_set():
        if isinstance(body, bytes):
            tid = f"T-BAD-{uuid.uuid4().hex[:6].upper()}"
            events.append((tid, body))
        else:
            events.append(client.ticket_event(body))
            tid = str(body["ticket_id"])
        ids[label] = tid
    return events, ids
