"""The approval desk on real Postgres: one decision wins, a decision the broker did not take is
published again later (same event), and an overdue approval becomes an escalation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from agentbus.escalation import handoffs
from agentbus.escalation.desk import ApprovalDesk, NotAllowed, NotPending
from agentbus.escalation.store import PgEscalationStore
from agentbus.shared.db import create_pool, migrate
from agentbus.shared.events import (
    ActionDecidedV1,
    ApprovalDecidedV1,
    Decision,
    EscalationRequestedV2,
    Event,
)
from agentbus.shared.identities import Identity
from builders import PRODUCER, proposal

pytestmark = pytest.mark.integration

ALICE = Identity("user:alice", frozenset({"refund-approver"}))
CAROL = Identity("user:carol", frozenset({"refund-approver"}))
BOB = Identity("user:bob", frozenset({"viewer"}))


class Broker:
    """Stands in for Kafka: records what was published, or fails while `down`."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.down = False

    async def publish(self, event: Event) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.published.append(event)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PgEscalationStore]:
    await migrate(database_url)
    pool = await create_pool(database_url)
    yield PgEscalationStore(pool)
    await pool.close()


async def pending(store: PgEscalationStore, ticket: str, ttl_s: float = 3600) -> tuple[str, ActionDecidedV1]:
    prop = proposal(
        action_id=f"act-{ticket}-1",
        args={"order_id": "ORD-1002", "amount_cents": 4000, "currency": "USD"},
        idempotency_key=f"acme:{ticket}:1:payments.issue_refund",
    )
    decision = ActionDecidedV1(
        ticket_id=ticket,
        tenant_id="acme",
        step=5,
        producer=PRODUCER,
        payload=Decision(
            proposal=prop,
            verdict="needs_approval",
            rule_ids=["refund.needs_approval"],
            reason="§3.2",
            approver_role="refund-approver",
        ),
    )
    aid = await store.add_approval(
        {
            "id": handoffs.approval_id(prop.action_id),
            "action_id": prop.action_id,
            "ticket_id": ticket,
            "tenant_id": "acme",
            "proposal": prop.model_dump(mode="json"),
            "preview": handoffs.preview(prop),
            "required_role": "refund-approver",
            "reason": "§3.2",
            "decision_event": decision.model_dump(mode="json"),
        },
        ttl_s=ttl_s,
    )
    return aid, decision


async def test_of_two_concurrent_decisions_exactly_one_wins(store: PgEscalationStore) -> None:
    broker = Broker()
    desk = ApprovalDesk(broker.publish, PRODUCER, store)
    aid, decision = await pending(store, "T-RACE")
    with pytest.raises(NotAllowed, match="user:bob has roles: viewer"):
        await desk.decide(aid, BOB, approve=True, reason="")
    results = await asyncio.gather(
        desk.decide(aid, ALICE, approve=True, reason="fine"),
        desk.decide(aid, CAROL, approve=False, reason="no"),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, NotPending)]
    assert len(won) == 1 and len(lost) == 1, results
    assert f"is already {won[0]['status']}" in lost[0].reason
    assert len(broker.published) == 1
    event = broker.published[0]
    assert isinstance(event, ApprovalDecidedV1)
    assert event.causation_id == decision.event_id and event.step == decision.step + 1
    assert event.payload.approver == won[0]["approver"]


async def test_a_decision_the_broker_missed_is_published_later_as_the_same_event(
    store: PgEscalationStore,
) -> None:
    broker = Broker()
    desk = ApprovalDesk(broker.publish, PRODUCER, store, publish_timeout_s=1)
    aid, _ = await pending(store, "T-OUTBOX")
    broker.down = True
    approved = await desk.decide(aid, ALICE, approve=True, reason="ok")
    assert approved["status"] == "approved" and approved["published"] is False
    await desk.sweep()  # still down: nothing lost, nothing sent
    assert broker.published == [] and (await desk.get(aid))["published"] is False

    broker.down = False
    await desk.sweep()
    stored = (await store.get_approval(aid) or {})["outcome_event"]
    assert [e.event_id for e in broker.published] == [stored["event_id"]]
    assert (await desk.get(aid))["published"] is True
    await desk.sweep()  # published once is enough
    assert len(broker.published) == 1


async def test_an_overdue_approval_expires_into_an_escalation(store: PgEscalationStore) -> None:
    broker = Broker()
    desk = ApprovalDesk(broker.publish, PRODUCER, store)
    aid, decision = await pending(store, "T-LATE", ttl_s=0.2)
    fresh, _ = await pending(store, "T-FRESH")
    await asyncio.sleep(0.3)
    with pytest.raises(NotPending, match="expired at"):
        await desk.decide(aid, ALICE, approve=True, reason="too late")
    assert await desk.expire_due() == 1
    assert (await desk.get(aid))["status"] == "expired"
    assert (await desk.get(fresh))["status"] == "pending"
    [event] = broker.published
    assert isinstance(event, EscalationRequestedV2)
    assert event.payload.reason == "approval_expired" and event.causation_id == decision.event_id
    with pytest.raises(NotPending, match="is already expired"):
        await desk.decide(aid, ALICE, approve=True, reason="too late")
    assert await desk.expire_due() == 0
