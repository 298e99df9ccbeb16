"""Kill switches on the real embedded broker: a killed topic pauses its consumers without losing or
repeating anything, a restarted service reads the switch back, executors refuse a killed tool."""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Sequence

import pytest
from agentbus.cli.client import publish, ticket_event
from agentbus.cli.demo import refund_ticket
from agentbus.cli.main import app
from agentbus.cli.switches import engaged_switches, switch_event
from agentbus.shared import topics
from agentbus.shared.bus import Bus, ensure_topics
from agentbus.shared.events import ControlSwitchV1, Event
from agentbus.shared.serialization import dumps
from aiokafka import AIOKafkaConsumer
from test_bus import committed, produce, read_all, settings_for
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


def ticket_bytes(n: int) -> bytes:
    return dumps(ticket_event(refund_ticket("ORD-1001", ticket_id=f"T-{n}")))


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def flip(settings, engaged: bool, reason: str = "test") -> None:
    event = switch_event(
        "topic", topics.TICKETS_RECEIVED.name, engaged=engaged, reason=reason, actor="operator:test"
    )
    await publish(settings, [event])


async def started(bus: Bus) -> Bus:
    await bus.start_control()
    await bus.broker.start()
    return bus


async def stopped(bus: Bus) -> None:
    await bus.broker.stop()
    await bus.stop_control()


def recording_bus(settings, handled: list[str]) -> Bus:
    bus = Bus(settings)

    async def handler(event: Event) -> Sequence[Event]:
        handled.append(event.ticket_id or "")
        return []

    bus.subscribe(topics.TICKETS_RECEIVED, handler)
    return bus


async def test_killed_topic_pauses_and_resumes_where_it_stopped(broker, topic_prefix):
    settings = settings_for(broker, topic_prefix)
    await ensure_topics(settings)
    handled: list[str] = []
    bus = await started(recording_bus(settings, handled))
    try:
        await produce(settings, topics.TICKETS_RECEIVED, [ticket_bytes(n) for n in range(3)])
        await until(lambda: len(handled) == 3)

        await flip(settings, engaged=True)
        await until(lambda: bus.switches.halting(topics.TICKETS_RECEIVED.name) is not None)
        await produce(settings, topics.TICKETS_RECEIVED, [ticket_bytes(n) for n in range(3, 8)])
        await asyncio.sleep(1.5)  # many fetch cycles: a consumer that ignored the switch would act
        assert handled == ["T-0", "T-1", "T-2"]
        assert await committed(settings, bus) == 3, "held messages must stay uncommitted"

        await flip(settings, engaged=False)
        await until(lambda: len(handled) >= 8)
        await asyncio.sleep(0.3)
        assert handled == [f"T-{n}" for n in range(8)], "each message once, in order, none lost"
        for _ in range(100):
            if await committed(settings, bus) == 8:
                break
            await asyncio.sleep(0.05)
        assert await committed(settings, bus) == 8
    finally:
        await stopped(bus)


async def test_a_restarted_service_reads_the_switch_back_before_consuming(broker, topic_prefix):
    settings = settings_for(broker, topic_prefix)
    await ensure_topics(settings)
    await flip(settings, engaged=True, reason="payments incident")
    await produce(settings, topics.TICKETS_RECEIVED, [ticket_bytes(n) for n in range(4)])

    handled: list[str] = []
    bus = await started(recording_bus(settings, handled))  # a fresh process: state from the topic
    try:
        switch = bus.switches.halting(topics.TICKETS_RECEIVED.name)
        assert switch is not None and switch.reason == "payments incident"
        await asyncio.sleep(1.5)
        assert handled == []

        await flip(settings, engaged=False)
        await until(lambda: len(handled) == 4)
        assert handled == [f"T-{n}" for n in range(4)]
    finally:
        await stopped(bus)

    # Every change is an event on the control topic, with its actor and reason (the audit trail).
    changes = await read_all(settings, topics.CONTROL, expect=2)
    assert [type(e) for e in changes] == [ControlSwitchV1, ControlSwitchV1]
    assert [(e.payload.engaged, e.payload.actor) for e in changes] == [
        (True, "operator:test"),
        (False, "operator:test"),
    ]
    assert await engaged_switches(settings) == []


async def test_cli_kill_resume_and_list(broker, topic_prefix, monkeypatch):
    settings = settings_for(broker, topic_prefix)
    await ensure_topics(settings)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("DATABASE_URL", "postgresql://unused")
    monkeypatch.setenv("AGENTBUS_TOPIC_PREFIX", topic_prefix)
    runner = CliRunner()

    async def cli(*args: str):
        return await asyncio.to_thread(runner.invoke, app, list(args))

    killed = await cli("kill", "tool", "payments.issue_refund", "--reason", "refund API double-charging")
    assert killed.exit_code == 0, killed.output
    assert "engaged tool payments.issue_refund" in killed.output
    listed = await cli("switches")
    assert "payments.issue_refund" in listed.output
    assert f"operator:{getpass.getuser()}" in listed.output
    assert "refund API double-charging" in listed.output

    bad = await cli("kill", "topic", "actions.nope", "--reason", "x")
    assert bad.exit_code == 2 and "unknown topic 'actions.nope'" in bad.output

    resumed = await cli("resume", "tool", "payments.issue_refund", "--reason", "fixed", "--actor", "sre:kim")
    assert resumed.exit_code == 0, resumed.output
    listed = await cli("switches", "--json")
    assert listed.output.strip() == "[]"
    changes = await read_all(settings, topics.CONTROL, expect=2)
    assert [(e.payload.engaged, e.payload.actor) for e in changes][-1] == (False, "sre:kim")
    # Keyed per switch, as the services publish them: compaction keeps each switch's latest change.
    assert await control_keys(settings) == [b"tool:payments.issue_refund"] * 2


async def control_keys(settings) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topics.topic_name(topics.CONTROL, settings.topic_prefix),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=2000)
        return [r.key for records in batch.values() for r in records]
    finally:
        await consumer.stop()
