"""The planner service through FastStream's in-memory broker, with an in-memory task store."""

from __future__ import annotations

import builders
import pytest
from agentbus.planner.handlers import PlannerHandlers
from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.events import (
    ActionProposedV1,
    ActionVerifiedV1,
    Event,
    TaskClassifiedV2,
    Verification,
    decode,
)
from agentbus.shared.settings import Settings
from fakes import MemoryTaskStore, as_every_stage
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage


@pytest.fixture
def planner() -> tuple[Bus, MemoryTaskStore, list[Event]]:
    bus = as_every_stage(Bus(Settings(service="planner", topic_prefix="component.")))
    store = MemoryTaskStore()
    handlers = PlannerHandlers(bus, store)
    bus.subscribe(topics.TASKS_CLASSIFIED, handlers.on_task_classified)
    bus.subscribe(topics.ACTIONS_VERIFIED, handlers.on_action_verified)
    proposed: list[Event] = []

    @bus.broker.subscriber(bus.topic(topics.ACTIONS_PROPOSED))
    async def collect(msg: KafkaMessage) -> None:
        proposed.append(decode(msg.body))

    return bus, store, proposed


def classified() -> TaskClassifiedV2:
    event = builders.event(TaskClassifiedV2, step=1)
    assert isinstance(event, TaskClassifiedV2)
    return event


async def test_classified_task_gets_one_proposal_and_a_redelivery_repeats_it(planner):
    bus, store, proposed = planner
    event = classified()
    async with TestKafkaBroker(bus.broker):
        await bus.publish(event)
        await bus.publish(event)  # redelivered: the stored output goes out again, unchanged

    assert [type(e) for e in proposed] == [ActionProposedV1, ActionProposedV1]
    assert proposed[0] == proposed[1]
    assert proposed[0].payload.tool == "orders.get_order"
    assert proposed[0].causation_id == event.event_id
    state, _ = store.rows["T-1"]
    assert state.step == 0 and state.pending_action_id == proposed[0].payload.action_id


async def test_verified_order_advances_to_the_refund_and_a_stale_verification_is_ignored(planner):
    bus, store, proposed = planner
    async with TestKafkaBroker(bus.broker):
        await bus.publish(classified())
        first = proposed[0]
        assert isinstance(first, ActionProposedV1)
        verification = Verification(
            action_id=first.payload.action_id,
            tool="orders.get_order",
            verified=True,
            check="read_only",
            result=builders.order_result(),
        )
        verified = first.answer(ActionVerifiedV1, verification, bus.producer)
        await bus.publish(verified)
        stale = first.answer(
            ActionVerifiedV1,
            verification.model_copy(update={"action_id": "act-someone-else"}),
            bus.producer,
        )
        await bus.publish(stale)

    assert [e.payload.tool for e in proposed] == ["orders.get_order", "payments.issue_refund"]
    refund = proposed[1].payload
    assert refund.args == {"order_id": "ORD-1001", "amount_cents": 2000, "currency": "USD"}
    assert store.rows["T-1"][0].step == 1


async def test_an_eligible_task_for_a_workflow_without_planner_is_escalated(planner):
    bus, store, _ = planner
    escalations: list[Event] = []

    @bus.broker.subscriber(bus.topic(topics.ESCALATIONS_REQUESTED))
    async def collect(msg: KafkaMessage) -> None:
        escalations.append(decode(msg.body))

    event = classified()
    orphan = event.model_copy(update={"payload": event.payload.model_copy(update={"workflow": "payroll"})})
    async with TestKafkaBroker(bus.broker):
        await bus.publish(orphan)

    assert [e.payload.reason for e in escalations] == ["out_of_scope"]
    assert "payroll" in escalations[0].payload.summary
    assert store.rows == {}
