"""LostLogGuard: a position past the partition's end twice at the same offset is read from the start."""

from __future__ import annotations

from agentbus.shared.lost_log import LostLogGuard
from aiokafka import TopicPartition

TP = TopicPartition("agentbus.actions.decided.v1", 0)


class RecordingConsumer:
    """The aiokafka calls the guard makes, with aiokafka's signatures (the seeks are coroutines)."""

    def __init__(self, position: int, end: int) -> None:
        self.at, self.end = position, end
        self.rewound: list[TopicPartition] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.end for tp in partitions}

    async def position(self, tp: TopicPartition) -> int:
        return self.at

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.rewound.extend(partitions)
        self.at = 0


async def test_a_position_past_the_end_twice_at_the_same_offset_is_rewound_to_the_start():
    guard, consumer = LostLogGuard(0.01), RecordingConsumer(position=39, end=3)
    await guard.check(consumer)
    assert consumer.rewound == []  # once may be a log end the metadata has not caught up with
    await guard.check(consumer)
    assert consumer.rewound == [TP]
    assert consumer.at == 0


async def test_a_position_that_moves_or_is_within_the_log_is_left_alone():
    guard, consumer = LostLogGuard(0.01), RecordingConsumer(position=39, end=3)
    await guard.check(consumer)
    consumer.at = 40  # still consuming: not a stale position
    await guard.check(consumer)
    consumer.end = 50
    await guard.check(consumer)
    await guard.check(consumer)
    assert consumer.rewound == []
