"""The planner service routes an it_access task by its workflow, through FastStream's in-memory broker."""

from __future__ import annotations

import builders
from agentbus.planner.handlers import PlannerHandlers
from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.events import (
    ActionDecidedV1,
    ActionProposedV1,
    Decision,
    EscalationRequestedV2,
    Event,
    TaskClassified,
    TaskClassifiedV2,
    decode,
)
from agentbus.shared.settings import Settings
from fakes import MemoryTaskStore, as_every_stage
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage


async def test_group_access_task_is_planned_by_it_access_and_a_deny_escalates() -> None:
    bus = as_every_stage(Bus(Settings(service="planner", topic_prefix="component.")))
    store = MemoryTaskStore()
    handlers = PlannerHandlers(bus, store)
    bus.subscribe(topics.TASKS_CLASSIFIED, handlers.on_task_classified)
    bus.subscribe(topics.ACTIONS_DECIDED, handlers.on_action_decided)
    out: list[Event] = []

    @bus.broker.subscriber(bus.topic(topics.ACTIONS_PROPOSED))
    async def proposed(msg: KafkaMessage) -> None:
        out.append(decode(msg.body))

    @bus.broker.subscriber(bus.topic(topics.ESCALATIONS_REQUESTED))
    async def escalated(msg: KafkaMessage) -> None:
        out.append(decode(msg.body))

    base = builders.payloads()[TaskClassifiedV2]
    assert isinstance(base, TaskClassified)
    task = base.model_copy(
        update={
            "workflow": "it_access",
            "intent": "group_access",
            "order_id": None,
            "facts": {"user_id": "U-100", "group_id": "grp-prod-admin"},
        }
    )
    async with TestKafkaBroker(bus.broker):
        await bus.publish(builders.event(TaskClassifiedV2, task, step=1))
        first = out[0]
        assert isinstance(first, ActionProposedV1)
        deny = Decision(proposal=first.payload, verdict="deny", rule_ids=["agent.mismatch"], reason="no")
        await bus.publish(first.answer(ActionDecidedV1, deny, bus.producer))

    assert [type(e) for e in out] == [ActionProposedV1, EscalationRequestedV2]
    proposal = out[0].payload
    assert proposal.tool == "directory.get_user"
    assert proposal.agent == "agent:it-access"
    assert proposal.args == {"user_id": "U-100", "group_id": "grp-prod-admin"}
    assert out[1].payload.reason == "policy_denied"
    assert store.rows["T-1"][0].workflow == "it_access"
    assert store.rows["T-1"][0].state == "escalated"
