"""A consumer whose position lies past the end of its partition: the broker lost the log.

An in-memory broker (the embedded Tansu) that restarts comes back empty. Consumers still hold positions
in the old log, and commit them to the new one; they would skip every record of the new log below
that offset. A position stays past the end only when the log was lost, so a partition found there
twice in a row, at the same offset, is read again from its start: its records are all new to the
group, and every consumer absorbs a redelivery anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

log = logging.getLogger("agentbus.bus")


class LostLogGuard(ConsumerRebalanceListener):  # type: ignore[misc]
    """Watches the consumer's positions every `interval_s`, from its first assignment on."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        # Set once the subscriber exists: returns its aiokafka consumer (None before it started).
        self.consumer_of: Callable[[], Any] = lambda: None
        self._watch: asyncio.Task[None] | None = None
        self._past_end: dict[TopicPartition, int] = {}  # found past the end once, at this offset

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._watch is None and self.consumer_of() is not None:
            self._watch = asyncio.create_task(self._watch_positions(), name="lost-log-guard")

    async def _watch_positions(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            consumer = self.consumer_of()
            if consumer is None or getattr(consumer, "_closed", False):
                return
            with contextlib.suppress(Exception):  # a check, never a reason to fail the consumer
                await self.check(consumer)

    async def check(self, consumer: Any) -> None:
        assigned = list(consumer.assignment())
        ends = await consumer.end_offsets(assigned) if assigned else {}
        for tp in assigned:
            position = await asyncio.wait_for(consumer.position(tp), 2)
            if position <= ends[tp]:
                self._past_end.pop(tp, None)
            elif self._past_end.get(tp) != position:
                self._past_end[tp] = position  # maybe a log end not yet updated: look again
            else:
                del self._past_end[tp]
                await self._rewind(consumer, tp, position, ends[tp])

    @staticmethod
    async def _rewind(consumer: Any, tp: TopicPartition, offset: int, end: int) -> None:
        log.warning(
            "%s:%s: at offset %s, past the end %s (the broker lost its log); reading it from the start",
            tp.topic,
            tp.partition,
            offset,
            end,
        )
        await consumer.seek_to_beginning(tp)
