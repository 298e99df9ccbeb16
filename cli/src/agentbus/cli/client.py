"""What an upstream system or an operator does from outside: submit tickets, wait for them, trace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from agentbus.shared import topics
from agentbus.shared.bus import acked_producer, message_key
from agentbus.shared.db import connect
from agentbus.shared.events import Event, Producer, TicketReceived, TicketReceivedV1
from agentbus.shared.serialization import dumps
from agentbus.shared.settings import Settings
from agentbus.shared.status import SETTLED, ticket_status
from agentbus.shared.validation import problems
from agentbus.trace_sink.store import ticket_events
from pydantic import ValidationError

CLI_PRODUCER = Producer(service="cli", version="0.1.0", instance="agentbus-submit")


class BadTicket(ValueError):
    """The ticket file does not match tickets.received v1; the message says what to fix."""


def ticket_event(data: dict[str, Any]) -> TicketReceivedV1:
    try:
        ticket = TicketReceived.model_validate(data)
    except ValidationError as exc:
        raise BadTicket(f"not a valid ticket (tickets.received v1): {problems(exc)}") from exc
    return TicketReceivedV1(
        ticket_id=ticket.ticket_id,
        tenant_id=ticket.tenant_id,
        producer=CLI_PRODUCER,
        payload=ticket,
    )


class Publisher:
    """One producer for many publishes (`async with Publisher(settings) as publisher:`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = acked_producer(settings)

    async def __aenter__(self) -> Publisher:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def publish(self, items: Sequence[Event] | Sequence[tuple[str, bytes]]) -> None:
        """Publish events to their topics (or raw (key, bytes) to tickets.received, as a broken
        upstream would) and wait for the broker's acks."""
        for item in items:
            if isinstance(item, Event):
                spec = topics.TOPIC_FOR_TYPE[item.type]
                # As Bus.publish keys it: the ticket, or for a switch its compacted slot.
                key, value = message_key(item) or "", dumps(item)
                headers = [("type", item.type.encode()), ("version", str(item.version).encode())]
            else:
                spec, (key, value), headers = topics.TICKETS_RECEIVED, item, []
            topic = topics.topic_name(spec, self.settings.topic_prefix)
            partition = topics.fixed_partition(spec)
            await self.producer.send_and_wait(
                topic, value, key=key.encode(), partition=partition, headers=headers
            )


async def publish(settings: Settings, items: Sequence[Event] | Sequence[tuple[str, bytes]]) -> None:
    """Publish events with a producer of their own and wait for the broker's acks."""
    async with Publisher(settings) as publisher:
        await publisher.publish(items)


async def wait_for(
    database_url: str,
    ticket_ids: list[str],
    timeout: float = 60.0,
    until: frozenset[str] = SETTLED,
) -> dict[str, str]:
    """Poll the audit store until each ticket's status is in `until` (default: resolved,
    escalated, waiting on a human, or dead-lettered) or the timeout passes."""
    conn = await connect(database_url)
    try:
        deadline = time.monotonic() + timeout
        statuses: dict[str, str] = {}
        while True:
            for tid in ticket_ids:
                if statuses.get(tid) not in until:
                    statuses[tid] = ticket_status(await ticket_events(conn, tid))
            if all(s in until for s in statuses.values()) or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
