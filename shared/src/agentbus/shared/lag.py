"""Consumer lag per service: messages on its topics that its consumer groups have not committed yet."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from . import topics
from .kafka_clients import client_security_kwargs
from .settings import Settings


class LagProbe:
    """Kafka clients kept open between measurements (the console measures every few seconds)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        sec = client_security_kwargs(settings)
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **sec)
        self.consumer: AIOKafkaConsumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, **sec
        )

    async def start(self) -> None:
        await self.admin.start()
        try:
            await self.consumer.start()
        except BaseException:
            await self.admin.close()
            raise

    async def stop(self) -> None:
        # aiokafka's consumer starts a background task that a stop cancels; cancelled before it
        # first ran, it raises CancelledError out of stop(). A probe stopped right after it started
        # (nothing to measure) lets the task start first.
        await asyncio.sleep(0)
        await self.consumer.stop()
        await self.admin.close()

    async def measure(self, services: list[str] | None = None) -> dict[str, int | None]:
        """Per service: uncommitted messages (None = group unknown). `services` are process names as
        `agentbus up` runs them (executors per tool group: `executor-commerce`, …); by default the
        services of the topic map."""
        lag: dict[str, int | None] = {}
        prefix = self.settings.topic_prefix
        for service in services or list(topics.SERVICE_TOPICS):
            base = "executor" if service.startswith("executor-") else service
            if base == "console" or base not in topics.SERVICE_TOPICS:
                continue  # each console instance reads the whole history in its own group
            consumed = topics.SERVICE_TOPICS[base][0]
            groups: list[tuple[str, list[topics.TopicSpec]]]
            if service == "trace-sink":
                groups = [(f"{prefix}agentbus.{service}", list(consumed))]
            else:
                groups = [(topics.consumer_group(service, t, prefix), [t]) for t in consumed]
            lag[service] = await self._groups_lag(groups)
        return lag

    async def _groups_lag(self, groups: list[tuple[str, list[topics.TopicSpec]]]) -> int | None:
        total = 0
        for group, specs in groups:
            names = {topics.topic_name(s, self.settings.topic_prefix) for s in specs}
            partitions = [TopicPartition(n, p) for n in names for p in await self._partitions(n)]
            try:
                committed = await self.admin.list_consumer_group_offsets(group, partitions=partitions)
            except Exception:
                return None
            ends = await self.consumer.end_offsets(partitions)
            for tp in partitions:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                total += max(0, ends[tp] - done)
        return total

    async def _partitions(self, topic: str) -> set[int]:
        known = self.consumer.partitions_for_topic(topic)
        if known:
            return set(known)
        client: Any = self.consumer._client  # aiokafka has no public way to refresh metadata
        await client.force_metadata_update()
        return set(self.consumer.partitions_for_topic(topic) or ())


async def consumer_lag(settings: Settings, services: list[str] | None = None) -> dict[str, int | None]:
    """One measurement with clients opened and closed around it (for the CLI)."""
    probe = LagProbe(settings)
    await probe.start()
    try:
        return await probe.measure(services)
    finally:
        await probe.stop()
