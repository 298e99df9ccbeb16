"""Re-drive (DESIGN §5): republish stored events from the audit store so consumers process them again.

A re-driven record is the stored event itself, same event id: to every consumer it is a redelivery,
which each absorbs without a new effect (DESIGN §3). The CLI (`agentbus replay redrive`) and the
reconciler share this module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import orjson
from opentelemetry import trace
from uuid6 import uuid7

from .bus import REDRIVE_FOR_HEADER, REDRIVE_HEADER, acked_producer
from .settings import Settings
from .telemetry import continued, current_traceparent
from .topics import SERVICE_TOPICS, TOPIC_FOR_TYPE, topic_name

# Never republished, whatever the selection.
NOT_REDRIVEN = {
    # A switch is state, not work: the compacted topic holds each switch's latest value, and an old
    # record put back on it would set today's switch to what it was then.
    "control.switch": "a stored switch would overwrite the switch's current state",
    # A record of a failure that no stage consumes; its original failed once and would only fail again.
    "deadletter.recorded": "a dead letter drives no stage; its original bytes failed already",
}

# The stages a re-drive can aim at: the services that consume events and act on them.
STAGES = ("intake", "planner", "policy", "executor", "verifier", "escalation")


def stage_types(stage: str) -> frozenset[str]:
    """Event types `stage` consumes (from the topic map)."""
    return frozenset(spec.event_type for spec in SERVICE_TOPICS[stage][0])


class Location(NamedTuple):
    """Where a record sits on the broker."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class StoredEvent:
    position: int
    type: str
    ticket_id: str | None
    event: dict[str, Any]
    location: Location | None = None  # where the trace sink read it

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])


@dataclass(frozen=True)
class Selection:
    """Which stored events to re-drive: tickets, a window of occurred_at (as `agentbus export`), a
    tenant; all optional, ANDed."""

    tickets: Sequence[str] = ()
    since: datetime | None = None
    until: datetime | None = None
    tenant: str | None = None
    types: frozenset[str] | None = None  # None: every type that may be re-driven


SELECT = """
SELECT position, type, ticket_id, event FROM audit.events
WHERE type <> ALL($1::text[])
  AND ($2::text[] IS NULL OR ticket_id = ANY($2::text[]))
  AND ($3::timestamptz IS NULL OR occurred_at >= $3)
  AND ($4::timestamptz IS NULL OR occurred_at < $4)
  AND ($5::text IS NULL OR tenant_id = $5)
  AND ($6::text[] IS NULL OR type = ANY($6::text[]))
ORDER BY position
"""


async def stored_events(conn: asyncpg.Connection, selection: Selection) -> AsyncIterator[StoredEvent]:
    """The selected events in chain order, streamed with a cursor (a window may be large)."""
    args = (
        list(NOT_REDRIVEN),
        list(selection.tickets) or None,
        selection.since,
        selection.until,
        selection.tenant,
        sorted(selection.types) if selection.types is not None else None,
    )
    async with conn.transaction(readonly=True):
        async for row in conn.cursor(SELECT, *args, prefetch=500):
            yield StoredEvent(row["position"], row["type"], row["ticket_id"], _json(row["event"]))


def _json(value: Any) -> dict[str, Any]:
    # A pool or connection without the jsonb codec (agentbus.shared.db sets one) returns text.
    return orjson.loads(value) if isinstance(value, str | bytes) else dict(value)


@dataclass
class RedriveReport:
    run_id: str
    stage: str | None
    per_topic: Counter[str] = field(default_factory=Counter)
    tickets: set[str] = field(default_factory=set)
    # Per ticket, where each republished copy landed: (event id, location).
    copies: dict[str, list[tuple[str, Location]]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.per_topic.values())


class Redriver:
    """Publishes stored events back to their topics (acks=all), each marked with the run id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = acked_producer(settings)

    async def __aenter__(self) -> Redriver:
        try:
            await self.producer.start()
        except BaseException:
            await self.producer.stop()  # a failed start leaves connections behind
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(
        self,
        events: AsyncIterator[StoredEvent] | Iterable[StoredEvent],
        report: RedriveReport,
        *,
        dry_run: bool = False,
    ) -> RedriveReport:
        """Republish `events` in order; with `report.stage`, only what that stage consumes, marked
        for it alone (its topic's other consumers skip the record)."""
        wanted = stage_types(report.stage) if report.stage else None
        headers = [(REDRIVE_HEADER, report.run_id.encode())]
        if report.stage:
            headers.append((REDRIVE_FOR_HEADER, report.stage.encode()))
        async for stored in _aiter(events):
            if stored.type in NOT_REDRIVEN or (wanted is not None and stored.type not in wanted):
                continue
            topic = topic_name(TOPIC_FOR_TYPE[stored.type], self.settings.topic_prefix)
            report.per_topic[topic] += 1
            if stored.ticket_id:
                report.tickets.add(stored.ticket_id)
            if dry_run:
                continue
            # A span in the ticket's trace (the one the stored envelope names): the stage that
            # reprocesses the record continues from it.
            with (
                continued(stored.event.get("traceparent"), stored.ticket_id),
                _TRACER.start_as_current_span(
                    f"redrive {stored.type}",
                    kind=trace.SpanKind.PRODUCER,
                    attributes={
                        "agentbus.redrive.run_id": report.run_id,
                        "agentbus.event_id": stored.event_id,
                        "agentbus.ticket_id": stored.ticket_id or "",
                        "messaging.destination.name": topic,
                    },
                ),
            ):
                # One record in flight, as the services publish: the embedded Tansu reports a
                # partition's end as the last batch's base offset + 1, so after a multi-record batch
                # its consumers find themselves past the end, take the log for lost and rewind.
                meta = await self.producer.send_and_wait(topic, **record(stored, headers))
            if stored.ticket_id:
                where = Location(meta.topic, meta.partition, meta.offset)
                report.copies.setdefault(stored.ticket_id, []).append((stored.event_id, where))
        return report


def record(stored: StoredEvent, extra_headers: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    """The producer arguments for one stored event: its JSON, keyed and headed as Bus.publish does;
    the trace context is the active span's, else the one the event carries."""
    event = stored.event
    headers = [("type", stored.type.encode()), ("version", str(event["version"]).encode())]
    if traceparent := current_traceparent() or event.get("traceparent"):
        headers.append(("traceparent", str(traceparent).encode()))
    return {
        "value": orjson.dumps(event),
        "key": stored.ticket_id.encode() if stored.ticket_id else None,
        "headers": [*headers, *extra_headers],
    }


async def _aiter(events: AsyncIterator[StoredEvent] | Iterable[StoredEvent]) -> AsyncIterator[StoredEvent]:
    if isinstance(events, AsyncIterator):
        async for e in events:
            yield e
    else:
        for e in events:
            yield e


_TRACER = trace.get_tracer("agentbus.redrive")


def new_run_id() -> str:
    return f"redrive-{uuid7()}"
