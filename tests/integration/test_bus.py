"""The shared bus wiring on the real embedded broker: dead letters, bounded retries, commit after publish."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

import builders
import pytest
from agentbus.cli.client import ticket_event
from agentbus.cli.demo import refund_ticket
from agentbus.shared import topics
from agentbus.shared.bus import Bus, ensure_topics
from agentbus.shared.events import (
    DeadLetterRecordedV1,
    Event,
    TaskClassifiedV2,
    decode,
)
from agentbus.shared.serialization import dumps
from agentbus.shared.settings import Settings
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

pytestmark = pytest.mark.integration


def settings_for(broker, prefix: str, **overrides) -> Settings:
    return Settings(
        service="test",
        kafka_bootstrap_servers=broker.bootstrap,
        topic_prefix=prefix,
        topic_partitions=1,  # one partition: the poison message sits in front of the good one
        # As on the embedded stack (stack.EMBEDDED_BROKER_ENV): Tansu holds each join for 1 s.
        consumer_session_timeout_ms=2000,
        consumer_heartbeat_interval_ms=500,
        handler_backoff_ms=20,
        **overrides,
    )


async def produce(settings: Settings, spec: topics.TopicSpec, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topics.topic_name(spec, settings.topic_prefix), value, key=b"k")
    finally:
        await producer.stop()


async def read_all(
    settings: Settings, spec: topics.TopicSpec, expect: int, timeout: float = 20
) -> list[Event]:
    consumer = AIOKafkaConsumer(
        topics.topic_name(spec, settings.topic_prefix),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    events: list[Event] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(events) < expect and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                events.extend(decode(r.value) for r in records)
        return events
    finally:
        await consumer.stop()


def classified_for(event: Event, bus: Bus) -> TaskClassifiedV2:
    return event.answer(TaskClassifiedV2, builders.payloads()[TaskClassifiedV2], bus.producer)


async def run_bus(bus: Bus, until, timeout: float = 30) -> None:
    await bus.broker.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not until() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await bus.broker.stop()


async def test_malformed_event_is_dead_lettered_and_the_next_one_is_handled(broker, topic_prefix):
    settings = settings_for(broker, topic_prefix)
    await ensure_topics(settings)
    bus = Bus(settings)
    handled: list[str] = []

    async def handler(event: Event) -> Sequence[Event]:
        handled.append(event.ticket_id or "")
        return [classified_for(event, bus)]

    bus.subscribe(topics.TICKETS_RECEIVED, handler)
    good = ticket_event(refund_ticket("ORD-1001", ticket_id="T-GOOD"))
    poison = [b"{not json", b'{"type": "ticket.received", "version": 1, "extra": true}', b"[]"]
    await produce(settings, topics.TICKETS_RECEIVED, [*poison, dumps(good)])
    await run_bus(bus, lambda: handled == ["T-GOOD"])

    assert handled == ["T-GOOD"]
    dead = await read_all(settings, topics.DEADLETTER, expect=3)
    assert [type(e) for e in dead] == [DeadLetterRecordedV1] * 3
    assert [base64.b64decode(e.payload.original_b64) for e in dead] == poison
    assert [e.payload.error_type for e in dead] == ["malformed", "invalid", "malformed"]
    assert "not JSON" in dead[0].payload.reason
    assert "extra" in dead[1].payload.reason and "producer" in dead[1].payload.reason
    assert all(e.payload.source_topic.endswith("tickets.received.v1") for e in dead)
    assert [e.payload.offset for e in dead] == [0, 1, 2]
    classified = await read_all(settings, topics.TASKS_CLASSIFIED, expect=1)
    assert [e.ticket_id for e in classified] == ["T-GOOD"]


async def test_failing_handler_is_retried_then_dead_lettered_and_consumer_moves_on(broker, topic_prefix):
    settings = settings_for(broker, topic_prefix, handler_max_attempts=3)
    await ensure_topics(settings)
    bus = Bus(settings)
    calls: dict[str, int] = {}

    async def handler(event: Event) -> Sequence[Event]:
        calls[event.ticket_id or ""] = calls.get(event.ticket_id or "", 0) + 1
        if event.ticket_id == "T-BROKEN":
            raise RuntimeError("system of record is down")
        return [classified_for(event, bus)]

    bus.subscribe(topics.TICKETS_RECEIVED, handler)
    bad = ticket_event(refund_ticket("ORD-1", ticket_id="T-BROKEN"))
    good = ticket_event(refund_ticket("ORD-1", ticket_id="T-AFTER"))
    await produce(settings, topics.TICKETS_RECEIVED, [dumps(bad), dumps(good)])
    await run_bus(bus, lambda: "T-AFTER" in calls)

    assert calls == {"T-BROKEN": 3, "T-AFTER": 1}
    dead = await read_all(settings, topics.DEADLETTER, expect=1)
    assert len(dead) == 1
    letter = dead[0].payload
    assert letter.error_type == "handler_failed" and letter.attempts == 3
    assert "system of record is down" in letter.reason
    assert decode(base64.b64decode(letter.original_b64)) == bad


async def test_offset_is_committed_only_after_the_output_is_published(broker, topic_prefix):
    """A handler that fails once after its first try is redelivered: nothing is lost, and the
    committed offset reaches the end only once the output is on the output topic."""
    settings = settings_for(broker, topic_prefix)
    await ensure_topics(settings)
    bus = Bus(settings)
    attempts = 0
    committed_before_output: list[int] = []

    async def handler(event: Event) -> Sequence[Event]:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("transient")
        # Still inside the handler: the output is not published yet, so nothing is committed.
        committed_before_output.append(await committed(settings, bus))
        return [classified_for(event, bus)]

    bus.subscribe(topics.TICKETS_RECEIVED, handler)
    ticket = ticket_event(refund_ticket("ORD-1", ticket_id="T-ONCE"))
    await produce(settings, topics.TICKETS_RECEIVED, [dumps(ticket)])

    async def settled() -> bool:
        return await committed(settings, bus) == 1

    await bus.broker.start()
    try:
        for _ in range(300):
            if await settled():
                break
            await asyncio.sleep(0.05)
    finally:
        await bus.broker.stop()

    assert attempts == 2
    assert committed_before_output == [-1]
    assert await committed(settings, bus) == 1
    outputs = await read_all(settings, topics.TASKS_CLASSIFIED, expect=1)
    assert [e.causation_id for e in outputs] == [ticket.event_id]


async def committed(settings: Settings, bus: Bus) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        tp = TopicPartition(topics.topic_name(topics.TICKETS_RECEIVED, settings.topic_prefix), 0)
        offsets = await admin.list_consumer_group_offsets(bus.group(topics.TICKETS_RECEIVED), partitions=[tp])
        meta = offsets.get(tp)
        return meta.offset if meta is not None else -1
    finally:
        await admin.close()
