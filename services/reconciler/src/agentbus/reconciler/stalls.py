"""Which tickets have stalled and what to re-drive for each: pure bookkeeping, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from agentbus.shared.redrive import NOT_REDRIVEN, Location, StoredEvent


@dataclass
class Watch:
    """One ticket whose latest stored event may be the last that ever comes."""

    position: int  # chain position of its latest stored event
    last_at: datetime  # when that event was stored
    redrives: int = 0  # since the ticket last moved
    waits: int = 0  # looks since the last re-drive that found it queued
    next_at: datetime | None = None  # no look before this (backoff)
    copies: list[tuple[str, Location]] = field(default_factory=list)  # (event id, where) last re-driven


class StallTracker:
    """Tickets are watched from their stored events; one whose latest event is older than `after` is
    due. Each re-drive, and each look that finds the ticket only queued, doubles the wait before the
    next look. After `max_attempts` re-drives without progress the ticket is given up. A new event
    for a ticket is progress: the counts start again."""

    def __init__(self, after: timedelta, max_attempts: int) -> None:
        self.after = after
        self.max_attempts = max_attempts
        self.watches: dict[str, Watch] = {}

    def saw(self, ticket_id: str, position: int, recorded_at: datetime) -> None:
        watch = self.watches.get(ticket_id)
        if watch is None:
            self.watches[ticket_id] = Watch(position, recorded_at)
        elif position > watch.position:
            self.watches[ticket_id] = Watch(position, max(recorded_at, watch.last_at))

    def due(self, now: datetime) -> list[str]:
        return [
            tid
            for tid, w in self.watches.items()
            if now - w.last_at >= self.after and (w.next_at is None or now >= w.next_at)
        ]

    def exhausted(self, ticket_id: str) -> bool:
        return self.watches[ticket_id].redrives >= self.max_attempts

    def waited(self, ticket_id: str, now: datetime) -> int:
        """Count a look that left the ticket alone; the wait grows to 16 times `after` at most."""
        watch = self.watches[ticket_id]
        watch.waits += 1
        watch.next_at = now + self.after * 2 ** min(watch.waits - 1, 4)
        return watch.waits

    def redriven(self, ticket_id: str, now: datetime, copies: list[tuple[str, Location]]) -> int:
        """Count a re-drive and keep where its copies went; the next look comes `after` times
        2^(re-drives-1) later."""
        watch = self.watches[ticket_id]
        watch.redrives += 1
        watch.waits = 0
        watch.copies = copies
        watch.next_at = now + self.after * 2 ** (watch.redrives - 1)
        return watch.redrives

    def forget(self, ticket_id: str) -> None:
        """Settled or given up: watched again only if a new event comes."""
        self.watches.pop(ticket_id, None)


def frontier(events: Sequence[StoredEvent]) -> list[StoredEvent]:
    """The events at the ticket's last causal step: what the stage that owes the next step has not
    answered (each event's step is one more than its cause's). Answers to one cause share a step
    (the planner's proposal and escalation request, or answers on two branches), so all of them go:
    each consumer absorbs a redelivery of what it has already done."""
    steps = [e for e in events if e.type not in NOT_REDRIVEN]
    if not steps:
        return []
    last = max(_step(e) for e in steps)
    return [e for e in steps if _step(e) == last]


def awaited(watch: Watch, last: Sequence[StoredEvent]) -> list[tuple[str, Location]]:
    """The records whose presence on the broker says the ticket is only waiting: the copies re-driven
    last time, else the frontier as the trace sink read it."""
    if watch.copies:
        return list(watch.copies)
    return [(e.event_id, e.location) for e in last if e.location is not None]


def _step(stored: StoredEvent) -> int:
    return int(stored.event.get("step") or 0)
