"""In-memory view of the trace topics (the console owns no tables): recent tickets with their events,
dead letters, and the KPI ledger. Every change bumps `version`, which the live stream follows."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from agentbus.shared.events import DecodeError, decode
from agentbus.shared.kpis import KpiLedger
from agentbus.shared.redaction import redact_inbound
from agentbus.shared.status import ticket_status


class TicketView:
    """Keeps the last `capacity` tickets with their events, newest first on read."""

    def __init__(self, capacity: int = 500) -> None:
        self.capacity = capacity
        self.tickets: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.seen: set[str] = set()
        self.deadletters: list[dict[str, Any]] = []
        self.kpis = KpiLedger()  # fed every event, including those of tickets evicted here
        self.version = 0  # bumped by every new event
        self.changed_at: dict[str, int] = {}  # ticket → version of its last change
        self.deadletters_version = 0
        self.events_seen = 0  # distinct events decoded, for "has the console caught up?"

    def add_raw(self, value: bytes | None) -> None:
        try:
            event = redact_inbound(decode(value or b"")).model_dump(mode="json")
        except DecodeError:
            return  # not a valid event; its consumer dead-letters it and we show that instead
        event_id, ticket_id = event["event_id"], event["ticket_id"]
        if event_id in self.seen:
            return
        self.seen.add(event_id)
        self.events_seen += 1
        self.version += 1
        self.kpis.add(event)
        if event["type"] == "deadletter.recorded":
            self.deadletters = [event, *self.deadletters][:100]
            self.deadletters_version = self.version
        if not ticket_id:
            return
        events = self.tickets.pop(ticket_id, [])
        events.append(event)
        self.tickets[ticket_id] = events
        self.changed_at[ticket_id] = self.version
        while len(self.tickets) > self.capacity:
            dropped_id, dropped = self.tickets.popitem(last=False)
            self.changed_at.pop(dropped_id, None)
            self.seen.difference_update(e["event_id"] for e in dropped)

    def row(self, ticket_id: str) -> dict[str, Any]:
        events = self.tickets[ticket_id]
        received = next((e for e in events if e["type"] == "ticket.received"), None)
        payload = received.get("payload") if received else None
        return {
            "ticket_id": ticket_id,
            "tenant_id": events[0].get("tenant_id"),
            "subject": payload.get("subject") if isinstance(payload, dict) else None,
            "status": ticket_status(events),
            "steps": [e["type"] for e in events],
            "updated_at": events[-1]["occurred_at"],
        }

    def summary(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = []
        for ticket_id in reversed(self.tickets):
            try:
                rows.append(self.row(ticket_id))
            except (KeyError, TypeError, AttributeError):
                continue  # an event that is valid JSON but not a valid event: shown by its dead letter
            if len(rows) >= limit:
                break
        return rows

    def changed_since(self, version: int, limit: int = 100) -> list[dict[str, Any]]:
        """Rows of the tickets changed after `version`, newest change first."""
        changed = sorted(
            (tid for tid, v in self.changed_at.items() if v > version),
            key=self.changed_at.__getitem__,
            reverse=True,
        )
        rows = []
        for ticket_id in changed[:limit]:
            try:
                rows.append(self.row(ticket_id))
            except (KeyError, TypeError, AttributeError):
                continue
        return rows

    def ticket(self, ticket_id: str) -> list[dict[str, Any]] | None:
        return self.tickets.get(ticket_id)
