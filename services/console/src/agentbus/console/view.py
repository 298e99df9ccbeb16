"""In-memory view of recent tickets, built from the trace topics (the console owns no tables)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from agentbus.shared.events import DecodeError, decode
from agentbus.shared.redaction import redact_inbound
from agentbus.shared.status import ticket_status


class TicketView:
    """Keeps the last `capacity` tickets with their events, newest first on read."""

    def __init__(self, capacity: int = 500) -> None:
        self.capacity = capacity
        self.tickets: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.seen: set[str] = set()
        self.deadletters: list[dict[str, Any]] = []

    def add_raw(self, value: bytes | None) -> None:
        try:
            event = redact_inbound(decode(value or b"")).model_dump(mode="json")
        except DecodeError:
            return  # not a valid event; its consumer dead-letters it and we show that instead
        event_id, ticket_id = event["event_id"], event["ticket_id"]
        if event_id in self.seen:
            return
        self.seen.add(event_id)
        if event["type"] == "deadletter.recorded":
            self.deadletters = [event, *self.deadletters][:100]
        if not ticket_id:
            return
        events = self.tickets.pop(ticket_id, [])
        events.append(event)
        self.tickets[ticket_id] = events
        while len(self.tickets) > self.capacity:
            _, dropped = self.tickets.popitem(last=False)
            self.seen.difference_update(e["event_id"] for e in dropped)

    def summary(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = []
        for ticket_id, events in reversed(self.tickets.items()):
            first = events[0]
            received = next((e for e in events if e["type"] == "ticket.received"), None)
            rows.append(
                {
                    "ticket_id": ticket_id,
                    "tenant_id": first.get("tenant_id"),
                    "subject": received["payload"]["subject"] if received else None,
                    "status": ticket_status(events),
                    "steps": [e["type"] for e in events],
                    "updated_at": events[-1]["occurred_at"],
                }
            )
            if len(rows) >= limit:
                break
        return rows

    def ticket(self, ticket_id: str) -> list[dict[str, Any]] | None:
        return self.tickets.get(ticket_id)
