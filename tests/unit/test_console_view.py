"""Console's in-memory ticket view: ordering, statuses, de-duplication and eviction."""

from __future__ import annotations

import builders
from agentbus.console.view import TicketView
from agentbus.shared.events import (
    ActionDecidedV1,
    DeadLetterRecordedV1,
    Event,
    TaskClassifiedV2,
    TaskFinishedV2,
    TicketReceivedV1,
)
from agentbus.shared.serialization import dumps


def raw(model: type[Event], ticket_id: str | None, **envelope: object) -> bytes:
    return dumps(builders.event(model, ticket_id=ticket_id, **envelope))


def received(ticket_id: str, subject: str = "Refund please") -> bytes:
    return raw(TicketReceivedV1, ticket_id, payload=builders.ticket(ticket_id=ticket_id, subject=subject))


def test_summary_is_newest_first_with_statuses() -> None:
    view = TicketView()
    view.add_raw(received("T-1", "first"))
    view.add_raw(raw(TaskClassifiedV2, "T-1"))
    view.add_raw(raw(TaskFinishedV2, "T-1"))
    view.add_raw(received("T-2", "second"))
    rows = view.summary()
    assert [r["ticket_id"] for r in rows] == ["T-2", "T-1"]
    assert rows[0]["status"] == "received"
    assert rows[0]["subject"] == "second"
    assert rows[1]["status"] == "resolved"
    assert rows[1]["subject"] == "first"
    assert rows[1]["steps"] == ["ticket.received", "task.classified", "task.finished"]
    assert rows[1]["tenant_id"] == "acme"


def test_a_new_event_moves_its_ticket_to_the_top() -> None:
    view = TicketView()
    view.add_raw(received("T-1"))
    view.add_raw(received("T-2"))
    view.add_raw(raw(TaskClassifiedV2, "T-1"))
    assert [r["ticket_id"] for r in view.summary()] == ["T-1", "T-2"]
    assert view.summary()[0]["status"] == "in_progress"


def test_awaiting_approval_status() -> None:
    view = TicketView()
    view.add_raw(received("T-3"))
    payload = builders.payloads()[ActionDecidedV1].model_copy(update={"verdict": "needs_approval"})
    view.add_raw(raw(ActionDecidedV1, "T-3", payload=payload))
    assert view.summary()[0]["status"] == "awaiting_approval"


def test_summary_limit() -> None:
    view = TicketView()
    for n in range(5):
        view.add_raw(received(f"T-{n}"))
    assert [r["ticket_id"] for r in view.summary(limit=2)] == ["T-4", "T-3"]


def test_duplicate_event_ids_are_ignored() -> None:
    view = TicketView()
    value = received("T-1")
    view.add_raw(value)
    view.add_raw(value)
    events = view.ticket("T-1")
    assert events is not None
    assert len(events) == 1


def test_non_events_are_ignored() -> None:
    view = TicketView()
    for junk in (b"not json", b"", None, b"[1, 2]", b'"text"', b"42", b'{"type": "x"}'):
        view.add_raw(junk)
    assert view.summary() == []
    assert view.tickets == {}


def test_unknown_ticket() -> None:
    assert TicketView().ticket("T-404") is None


def test_capacity_evicts_the_oldest_ticket() -> None:
    view = TicketView(capacity=2)
    first = received("T-1")
    view.add_raw(first)
    view.add_raw(received("T-2"))
    view.add_raw(received("T-3"))
    assert [r["ticket_id"] for r in view.summary()] == ["T-3", "T-2"]
    assert view.ticket("T-1") is None
    # Its event ids are forgotten too, so a replay of it is shown again.
    view.add_raw(first)
    assert view.ticket("T-1") is not None
    assert len(view.tickets) == 2


def test_deadletters_are_listed_newest_first() -> None:
    view = TicketView()
    view.add_raw(raw(DeadLetterRecordedV1, None))
    view.add_raw(raw(DeadLetterRecordedV1, "T-9"))
    assert len(view.deadletters) == 2
    assert view.deadletters[0]["ticket_id"] == "T-9"
    assert view.summary()[0]["status"] == "dead_lettered"
    assert [r["ticket_id"] for r in view.summary()] == ["T-9"]
