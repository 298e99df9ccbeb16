"""The load both sides of `agentbus bench` get: messages published at full speed or at a fixed
offered rate, and when each one's last record was appended to the topic where it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from agentbus.shared.bus import acked_producer
from agentbus.shared.kafka_clients import client_security_kwargs
from agentbus.shared.settings import Settings
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


@dataclass(frozen=True)
class Message:
    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class Send:
    """One message to publish: its key up front (to watch for its end), the record built at send
    time (so an event's occurred_at is when it was sent, not when the phase was planned)."""

    key: str
    build: Callable[[], Message]


@dataclass
class PhaseRun:
    """Send time and end time (epoch seconds) per key; the end is the CreateTime of the first record
    with that key on the finish topic, as its producer stamped it."""

    name: str
    offered_rate: float | None  # None: as fast as the producer goes
    sent: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)
    end_values: dict[str, bytes] = field(default_factory=dict)
    started: float = 0.0  # monotonic, for CPU windows
    stopped: float = 0.0

    @property
    def latencies_s(self) -> list[float]:
        return sorted(self.ended[k] - self.sent[k] for k in self.ended if k in self.sent)

    @property
    def throughput(self) -> float:
        """Completed messages per second, first send to last end."""
        if not self.ended:
            return 0.0
        span = max(self.ended.values()) - min(self.sent.values())
        return len(self.ended) / span if span > 0 else 0.0

    @property
    def missing(self) -> int:
        return len(self.sent) - len(self.ended)


class EndWatch:
    """Reads the finish topic from its start and notes each watched key's first record. Not from
    its end: on the embedded broker a reset to "latest" after an out-of-range fetch can land past
    a record just appended (a run of 200 tickets missed 8 that way); keys are unique per phase, so
    reading the earlier records costs a little and misses nothing."""

    def __init__(self, settings: Settings, topic: str, run: PhaseRun, keys: set[str]) -> None:
        self.run = run
        self.keys = keys
        self.consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            **client_security_kwargs(settings),
        )
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        await self.consumer.seek_to_beginning()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()

    async def _follow(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    key = record.key.decode() if record.key else ""
                    if key in self.keys and key not in self.run.ended:
                        self.run.ended[key] = record.timestamp / 1000
                        self.run.end_values[key] = record.value or b""
            if batch:
                self.changed.set()


def producer_for(settings: Settings) -> AIOKafkaProducer:
    return acked_producer(settings)


async def send_in_lanes(
    producer: AIOKafkaProducer,
    builds: Sequence[Callable[[], Message]],
    partitions: int,
    *,
    rate: float | None = None,
    sent: Callable[[Message], object] = lambda _: None,
) -> None:
    """Message n goes to partition n mod `partitions`, each partition's in turn, one record in
    flight per partition, as the services publish (send_and_wait); with `rate`, message n leaves
    n/rate seconds after the start (or as soon after as its partition is free).

    One record per request matters on the embedded broker: Tansu 0.6 reports a partition's end
    as the base offset of its last record batch plus one, so after a batch of several records the
    consumers sit "past the end" (the lost-log guard rewinds them to the start) and lag reads 0."""
    start = time.monotonic()

    async def lane(partition: int) -> None:
        for n in range(partition, len(builds), partitions):
            if rate is not None and (wait := start + n / rate - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            msg = builds[n]()
            sent(msg)
            await producer.send_and_wait(
                msg.topic, msg.value, key=msg.key.encode(), partition=partition, headers=list(msg.headers)
            )

    await asyncio.gather(*(lane(p) for p in range(min(partitions, len(builds)))))


def _itself(msg: Message) -> Message:
    return msg


async def publish(settings: Settings, messages: Sequence[Message]) -> None:
    """Publish `messages` (as fast as send_in_lanes goes) and wait for every acknowledgement."""
    producer = producer_for(settings)
    await producer.start()
    try:
        await send_in_lanes(producer, [partial(_itself, m) for m in messages], settings.topic_partitions)
    finally:
        await producer.stop()


async def drive(
    settings: Settings,
    name: str,
    sends: Sequence[Send],
    finish_topic: str,
    *,
    rate: float | None = None,
    timeout: float = 600.0,
    progress: Callable[[int], object] = lambda _: None,
) -> PhaseRun:
    """Publish `sends` (as fast as one record in flight per partition goes, or `rate` a second)
    and wait until each key has ended on `finish_topic` or `timeout` passes; `progress` gets the
    count of ended keys as it grows."""
    run = PhaseRun(name, rate)
    watch = EndWatch(settings, finish_topic, run, {s.key for s in sends})
    producer = producer_for(settings)
    await watch.start()
    await producer.start()

    def sent(msg: Message) -> None:
        run.sent[msg.key] = time.time()
        if len(run.sent) % 20 == 0:
            progress(len(run.ended))

    try:
        run.started = time.monotonic()
        deadline = run.started + timeout
        await send_in_lanes(
            producer, [s.build for s in sends], settings.topic_partitions, rate=rate, sent=sent
        )
        while len(run.ended) < len(sends) and time.monotonic() < deadline:
            watch.changed.clear()
            progress(len(run.ended))
            try:
                await asyncio.wait_for(watch.changed.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        run.stopped = time.monotonic()
        progress(len(run.ended))
        return run
    finally:
        await producer.stop()
        await watch.stop()
