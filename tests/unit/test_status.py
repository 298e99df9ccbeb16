"""A ticket's status derived from its events (shared by CLI, console and tests)."""

from __future__ import annotations

from typing import Any

from agentbus.shared.status import FINAL, SETTLED, ticket_status


def ev(kind: str, **payload: Any) -> dict[str, Any]:
    return {"type": kind, "payload": payload}


def decided(action_id: str, verdict: str) -> dict[str, Any]:
    return ev("action.decided", proposal={"action_id": action_id}, verdict=verdict)


RECEIVED = ev("ticket.received")
CLASSIFIED = ev("task.classified")
PROPOSED = ev("action.proposed", action_id="a1")


def test_only_received() -> None:
    assert ticket_status([RECEIVED]) == "received"


def test_no_events_is_unknown() -> None:
    assert ticket_status([]) == "unknown"


def test_work_in_progress() -> None:
    assert ticket_status([RECEIVED, CLASSIFIED, PROPOSED]) == "in_progress"


def test_finished_resolved() -> None:
    events = [RECEIVED, CLASSIFIED, decided("a1", "allow"), ev("task.finished", outcome="resolved")]
    assert ticket_status(events) == "resolved"


def test_finished_escalated_wins_over_later_events_and_waiting() -> None:
    events = [
        RECEIVED,
        decided("a1", "needs_approval"),
        ev("task.finished", outcome="escalated"),
        PROPOSED,
    ]
    assert ticket_status(events) == "escalated"


def test_needs_approval_then_nothing_is_awaiting_approval() -> None:
    events = [RECEIVED, CLASSIFIED, PROPOSED, decided("a1", "needs_approval")]
    assert ticket_status(events) == "awaiting_approval"


def test_waiting_persists_through_other_events() -> None:
    events = [RECEIVED, decided("a1", "needs_approval"), ev("escalation.requested")]
    assert ticket_status(events) == "awaiting_approval"


def test_approval_allow_for_the_same_action_is_in_progress() -> None:
    events = [RECEIVED, decided("a1", "needs_approval"), decided("a1", "allow")]
    assert ticket_status(events) == "in_progress"


def test_allow_for_another_action_keeps_waiting() -> None:
    events = [RECEIVED, decided("a1", "needs_approval"), decided("a2", "allow")]
    assert ticket_status(events) == "awaiting_approval"


def test_deadletter() -> None:
    assert ticket_status([ev("deadletter.recorded")]) == "dead_lettered"
    assert ticket_status([RECEIVED, ev("deadletter.recorded")]) == "dead_lettered"


def test_settled_sets() -> None:
    assert {"resolved", "escalated"} == FINAL
    assert {"awaiting_approval", "dead_lettered"} <= SETTLED
    assert "in_progress" not in SETTLED
