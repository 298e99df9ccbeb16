"""What the broker says about a ticket's last records: still there, and still ahead of a consumer (the
ticket is queued), or lost or passed by every consumer without an answer (it has stalled)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from enum import Enum

import orjson
from agentbus.shared.kafka_clients import client_security_kwargs
from agentbus.shared.redrive import Location
from agentbus.shared.settings import Settings
from agentbus.shared.tools import load_registry
from agentbus.shared.topics import OBSERVERS, SERVICE_TOPICS, consumer_group, topic_name
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

log = logging.getLogger("agentbus.reconciler")


class RecordState(Enum):
    LOST = "lost"  # not on the broker any more (a broker that lost its memory, or retention)
    QUEUED = "queued"  # on the broker, and a consumer of its topic has not passed it yet
    PASSED = "passed"  # every consumer of its topic committed past it, yet nothing came of it
    UNKNOWN = "unknown"  # on the broker; no consumer of its topic has committed on that partition


def consumer_groups(settings: Settings) -> dict[str, list[str]]:
    """Topic name → the consumer groups of the stages that act on it. The executor runs one service
    per tool group (executor-<group>, see agentbus.cli.stack), or one for all of them."""
    executors = ["executor", *(f"executor-{g}" for g in load_registry(settings.tools_dir).groups())]
    groups: dict[str, list[str]] = {}
    for service, (consumed, _) in SERVICE_TOPICS.items():
        if service in OBSERVERS:
            continue
        for spec in consumed:
            for name in executors if service == "executor" else [service]:
                group = consumer_group(name, spec, settings.topic_prefix)
                groups.setdefault(topic_name(spec, settings.topic_prefix), []).append(group)
    return groups


class BrokerLog:
    """Reads single records by position (a consumer without a group: it commits nothing) and the
    consumer groups' committed offsets. Committed offsets are read once per pass."""

    def __init__(self, settings: Settings, groups: Mapping[str, Sequence[str]]) -> None:
        security = client_security_kwargs(settings)
        self.groups = groups
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            **security,
        )
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, **security)
        self._committed: dict[tuple[str, TopicPartition], int | None] = {}

    async def start(self) -> None:
        try:
            await self.consumer.start()
            await self.admin.start()
        except BaseException:
            await self.stop()  # a failed start leaves connections behind
            raise

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def state(self, event_id: str, where: Location) -> RecordState:
        if not await self.holds(event_id, where):
            return RecordState.LOST
        tp = TopicPartition(where.topic, where.partition)
        commits = [await self.committed(group, tp) for group in self.groups.get(where.topic, [])]
        known = [c for c in commits if c is not None]
        if not known:
            return RecordState.UNKNOWN
        return RecordState.PASSED if all(c > where.offset for c in known) else RecordState.QUEUED

    async def holds(self, event_id: str, where: Location) -> bool:
        """The record at `where` is still on the broker and is this event. Another event at that
        offset means the log was lost and refilled (a restarted in-memory broker)."""
        tp = TopicPartition(where.topic, where.partition)
        try:
            self.consumer.assign([tp])
            first = (await self.consumer.beginning_offsets([tp]))[tp]
            end = (await self.consumer.end_offsets([tp]))[tp]
            if not first <= where.offset < end:
                return False
            self.consumer.seek(tp, where.offset)
            fetched = await self.consumer.getmany(tp, timeout_ms=2000, max_records=1)
        except Exception as exc:  # an unknown topic or partition: the broker lost it
            log.info("cannot read %s: %r", where, exc)
            return False
        records = fetched.get(tp, [])
        if not records or records[0].offset != where.offset:
            return False
        try:
            return bool(orjson.loads(records[0].value or b"null").get("event_id") == event_id)
        except (orjson.JSONDecodeError, AttributeError):
            return False

    async def committed(self, group: str, tp: TopicPartition) -> int | None:
        """The group's committed offset on `tp`, None when it has none (or the group does not exist)."""
        key = (group, tp)
        if key not in self._committed:
            try:
                offsets = await self.admin.list_consumer_group_offsets(group, partitions=[tp])
            except Exception as exc:
                log.info("cannot read the offsets of %s: %r", group, exc)
                offsets = {}
            meta = offsets.get(tp)
            self._committed[key] = meta.offset if meta is not None and meta.offset >= 0 else None
        return self._committed[key]
