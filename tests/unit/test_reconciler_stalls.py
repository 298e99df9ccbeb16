"""The reconciler's bookkeeping: which tickets are due, the backoff between looks, progress, and
which events make a ticket's last step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agentbus.reconciler.stalls import StallTracker, Watch, awaited, frontier
from agentbus.shared.redrive import Location, StoredEvent

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
AFTER = timedelta(seconds=10)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stored(position: int, type_: str, step: int, **payload: Any) -> StoredEvent:
    event = {"event_id": f"e{position}", "type": type_, "step": step, "payload": payload}
    return StoredEvent(position, type_, "T-1", event, Location("t", 0, position))


def test_a_ticket_is_due_once_its_last_event_is_older_than_the_deadline() -> None:
    tracker = StallTracker(AFTER, max_attempts=3)
    tracker.saw("T-1", 1, at(0))
    tracker.saw("T-2", 2, at(5))
    assert tracker.due(at(9)) == []
    assert tracker.due(at(10)) == ["T-1"]
    assert sorted(tracker.due(at(15))) == ["T-1", "T-2"]


def test_each_redrive_doubles_the_wait_and_the_attempts_run_out() -> None:
    tracker = StallTracker(AFTER, max_attempts=3)
    tracker.saw("T-1", 1, at(0))
    assert tracker.redriven("T-1", at(10), []) == 1
    assert tracker.due(at(19)) == [] and tracker.due(at(20)) == ["T-1"]
    assert tracker.redriven("T-1", at(20), []) == 2
    assert tracker.due(at(39)) == [] and tracker.due(at(40)) == ["T-1"]
    assert tracker.redriven("T-1", at(40), []) == 3
    assert tracker.exhausted("T-1")
    tracker.forget("T-1")
    assert tracker.due(at(1000)) == []


def test_a_queued_ticket_is_looked_at_less_and_less_often_but_never_given_up() -> None:
    tracker = StallTracker(AFTER, max_attempts=2)
    tracker.saw("T-1", 1, at(0))
    now = at(10)
    for waits in range(1, 8):
        assert tracker.waited("T-1", now) == waits
        gap = tracker.watches["T-1"].next_at - now  # type: ignore[operator]
        assert gap == AFTER * 2 ** min(waits - 1, 4)
        now += gap
    assert not tracker.exhausted("T-1")
    tracker.redriven("T-1", now, [])
    assert tracker.watches["T-1"].waits == 0  # the copies get their own looks


def test_a_new_event_is_progress_and_starts_the_counts_again() -> None:
    tracker = StallTracker(AFTER, max_attempts=2)
    tracker.saw("T-1", 1, at(0))
    tracker.redriven("T-1", at(10), [])
    tracker.redriven("T-1", at(20), [])
    assert tracker.exhausted("T-1")
    tracker.saw("T-1", 1, at(0))  # the same event read again is not progress
    assert tracker.exhausted("T-1")
    tracker.saw("T-1", 7, at(25))
    assert not tracker.exhausted("T-1")
    assert tracker.due(at(34)) == [] and tracker.due(at(35)) == ["T-1"]


def test_the_frontier_is_every_event_of_the_last_step_but_never_a_dead_letter() -> None:
    events = [
        stored(1, "ticket.received", 0),
        stored(2, "task.classified", 1, eligible=False),
        stored(3, "escalation.requested", 2),
        stored(4, "deadletter.recorded", 3),
    ]
    assert [e.position for e in frontier(events)] == [3]
    siblings = [*events[:2], stored(5, "action.proposed", 2), stored(6, "escalation.requested", 2)]
    assert [e.position for e in frontier(siblings)] == [5, 6]
    assert frontier([stored(9, "deadletter.recorded", 0)]) == []


def test_the_broker_is_asked_for_the_last_copies_sent_else_for_the_frontier_as_stored() -> None:
    last = [stored(5, "action.proposed", 2), stored(6, "escalation.requested", 2)]
    watch = Watch(6, at(0))
    assert awaited(watch, last) == [("e5", Location("t", 0, 5)), ("e6", Location("t", 0, 6))]
    tracker = StallTracker(AFTER, max_attempts=3)
    tracker.watches["T-1"] = watch
    tracker.redriven("T-1", at(10), [("e5", Location("t", 2, 0))])
    assert awaited(watch, last) == [("e5", Location("t", 2, 0))]
    tracker.waited("T-1", at(20))  # a look that only waited keeps the copies
    assert (watch.redrives, watch.waits) == (1, 1) and watch.copies
    tracker.saw("T-1", 9, at(25))  # progress: a fresh watch
    assert awaited(tracker.watches["T-1"], last) == awaited(Watch(9, at(25)), last)
