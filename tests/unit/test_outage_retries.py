"""A handler that fails because Postgres or the broker is away waits for them without using up the
message's attempts; one that fails on the message itself is dead-lettered after the bounded tries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from agentbus.shared.bus import Bus
from agentbus.shared.events import TicketReceivedV1
from agentbus.shared.serialization import dumps
from agentbus.shared.settings import Settings
from agentbus.shared.transient import is_transient
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from builders import event


def test_outages_are_told_from_bad_messages() -> None:
    def wrapped(cause: BaseException) -> RuntimeError:
        try:
            raise RuntimeError("could not load the ticket") from cause
        except RuntimeError as exc:
            return exc

    away = [
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionResetError(),
        KafkaConnectionError(),
        KafkaTimeoutError(),
        wrapped(ConnectionRefusedError()),
    ]
    bad = [ValueError("no such order"), FileNotFoundError("x"), MessageSizeTooLargeError(), KeyError("k")]
    assert [is_transient(e) for e in away] == [True] * len(away)
    assert [is_transient(e) for e in bad] == [False] * len(bad)


@dataclass
class Message:
    """The parts of FastStream's KafkaMessage that Bus._process uses."""

    raw_message: ConsumerRecord[bytes, bytes]
    body: bytes
    acks: int = 0
    nacks: int = 0
    consumer: Any = None

    async def ack(self) -> None:
        self.acks += 1

    async def nack(self) -> None:
        self.nacks += 1


@dataclass
class Redelivery:
    """Runs Bus._process as the consumer would: again after each nack, until the message is settled."""

    bus: Bus
    dead_letters: list[str] = field(default_factory=list)

    async def run(self, handler: Any) -> Message:
        body = dumps(event(TicketReceivedV1))
        record = ConsumerRecord("agentbus.tickets.received.v1", 0, 7, 0, 0, b"T-1", body, None, 3, 3, [])
        msg = Message(record, body)
        for _ in range(50):
            await self.bus._process(msg, handler)
            if msg.acks:
                return msg
        raise AssertionError("never settled")


@pytest.fixture
def redelivery(monkeypatch: pytest.MonkeyPatch) -> Redelivery:
    settings = Settings(service="intake", kafka_bootstrap_servers="127.0.0.1:1", handler_backoff_ms=1)
    run = Redelivery(Bus(settings))

    async def dead_letter(record: Any, kind: str, reason: str, *, attempts: int = 1) -> None:
        run.dead_letters.append(f"{kind}: {reason} ({attempts})")

    monkeypatch.setattr(run.bus, "dead_letter", dead_letter)
    return run


async def test_a_postgres_restart_longer_than_the_attempts_loses_nothing(redelivery: Redelivery) -> None:
    failures = iter([asyncpg.CannotConnectNowError("the database system is starting up")] * 12)

    async def handler(_: Any) -> list[Any]:
        if (exc := next(failures, None)) is not None:
            raise exc
        return []

    msg = await redelivery.run(handler)
    assert (msg.nacks, msg.acks) == (12, 1)
    assert redelivery.dead_letters == []


async def test_a_message_that_keeps_failing_is_dead_lettered_after_its_attempts(
    redelivery: Redelivery,
) -> None:
    async def handler(_: Any) -> list[Any]:
        raise ValueError("no such order")

    msg = await redelivery.run(handler)
    assert (msg.nacks, msg.acks) == (4, 1)  # handler_max_attempts = 5
    assert redelivery.dead_letters == ["handler_failed: ValueError: no such order (5)"]
