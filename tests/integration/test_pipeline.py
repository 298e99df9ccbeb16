"""The refunds workflow end to end: every service its own process, real broker, real Postgres."""

from __future__ import annotations

import asyncio

import pytest
from agentbus.cli import client, demo
from agentbus.shared.acls import acl_plan, granted
from agentbus.shared.db import connect
from agentbus.shared.events import ActionProposedV1, ApprovalDecidedV1, ApprovalDecision, Producer
from agentbus.shared.status import FINAL
from agentbus.shared.topics import identity_of
from agentbus.trace_sink.store import ticket_events

pytestmark = pytest.mark.integration

STEPS_OF_A_RESOLVED_REFUND = [
    "ticket.received",
    "task.classified",
    *["action.proposed", "action.decided", "action.executed", "action.verified"] * 5,
    "task.finished",
]


async def test_demo_tickets_reach_their_final_states(
    start_stack, broker, database_url, topic_prefix, tmp_path
):
    async with start_stack(broker, database_url, topic_prefix, tmp_path) as stack:
        settings = stack.settings()
        # Only the policy decider holds the signing key; the planner (and everyone else) cannot sign.
        assert stack.supervisor is not None
        holders = {n for n, p in stack.supervisor.procs.items() if "AGENTBUS_SIGNING_KEY_FILE" in p.env}
        assert holders == {"policy"}
        assert not any(k.startswith("AGENTBUS_SIGNING") for k in stack.supervisor.procs["planner"].env)
        items = demo.demo_set()
        tickets = {label: body for label, body, _ in items if isinstance(body, dict)}
        malformed_key = "T-BAD-1"
        # The malformed event goes first: the valid tickets behind it must still complete.
        await client.publish(settings, [(malformed_key, items[-1][1])])  # type: ignore[list-item]
        await client.publish(settings, [client.ticket_event(t) for t in tickets.values()])
        ids = {label: t["ticket_id"] for label, t in tickets.items()}
        statuses = await client.wait_for(database_url, [*ids.values(), malformed_key], timeout=90)

        assert {label: statuses[tid] for label, tid in ids.items()} == {
            label: expected for label, _, expected in items if label in ids
        }
        assert statuses[malformed_key] == "dead_lettered"

        conn = await connect(database_url)
        try:
            refunds = await conn.fetch("SELECT order_id, amount_cents FROM sor.refunds ORDER BY order_id")
            assert [(r["order_id"], r["amount_cents"]) for r in refunds] == [("ORD-1001", 2000)]
            labels = await conn.fetch("SELECT order_id FROM sor.return_labels")
            assert [r["order_id"] for r in labels] == ["ORD-1001"]
            t1001 = ids["ORD-1001 $20 refund"]
            reply = await conn.fetchval("SELECT body FROM sor.ticket_replies WHERE ticket_id = $1", t1001)
            assert "$20.00" in reply and "ORD-1001" in reply
            assert await conn.fetchval("SELECT status FROM sor.tickets WHERE id = $1", t1001) == "closed"

            approval = await conn.fetchrow(
                "SELECT * FROM escalation.approvals WHERE ticket_id = $1", ids["ORD-1002 $40 refund"]
            )
            assert approval["status"] == "pending" and approval["required_role"] == "refund-approver"
            assert "amount_cents = 4000" in approval["preview"]

            handoff = await conn.fetchrow(
                "SELECT * FROM escalation.handoffs WHERE ticket_id = $1", ids["ORD-1003 $80 refund"]
            )
            assert handoff["reason"] == "policy_denied"
            for needle in ("ORD-1003", "$80.00", "refund.above_approval_limit"):
                assert needle in handoff["summary"]

            not_eligible = await conn.fetchrow(
                "SELECT * FROM escalation.handoffs WHERE ticket_id = $1", ids["ORD-1004 in transit"]
            )
            assert not_eligible["reason"] == "not_eligible" and "in_transit" in not_eligible["summary"]
            question = await conn.fetchrow(
                "SELECT * FROM escalation.handoffs WHERE ticket_id = $1", ids["non-refund question"]
            )
            assert question["reason"] == "out_of_scope"

            chain = await ticket_events(conn, t1001)
            assert [e["type"] for e in chain] == STEPS_OF_A_RESOLVED_REFUND
            decided = [e["payload"] for e in chain if e["type"] == "action.decided"]
            assert [d["proposal"]["tool"] for d in decided] == [
                "orders.get_order",
                "payments.issue_refund",
                "shipping.create_return_label",
                "helpdesk.reply_to_customer",
                "helpdesk.close_ticket",
            ]
            assert decided[1]["rule_ids"] == ["refund.autonomous"]
            assert all(
                e["policy_version"].startswith("sha256:") for e in chain if e["type"] == "action.decided"
            )

            dead = await ticket_events(conn, malformed_key)
            assert [e["type"] for e in dead] == ["deadletter.recorded"]
            assert dead[0]["payload"]["error_type"] == "malformed"

            # A refund approver releases the pending $40 refund: the ticket then completes.
            # A forged approval of the $80 refund (denied, never pending) releases nothing.
            t1002, t1003 = ids["ORD-1002 $40 refund"], ids["ORD-1003 $80 refund"]
            pending = await refund_proposal(conn, t1002)
            denied = await refund_proposal(conn, t1003)
            await client.publish(
                settings,
                [approval_of(approval["id"], pending), approval_of("AP-FORGED", denied)],
            )
            after = await client.wait_for(database_url, [t1002], timeout=60, until=FINAL)
            assert after[t1002] == "resolved"
            refunds = await conn.fetch("SELECT order_id, amount_cents FROM sor.refunds ORDER BY order_id")
            assert [(r["order_id"], r["amount_cents"]) for r in refunds] == [
                ("ORD-1001", 2000),
                ("ORD-1002", 4000),
            ]
            forged = await decisions_with_rule(conn, t1003, "approval.unmatched")
            assert [d["verdict"] for d in forged] == ["deny"]

            # Every event the run recorded was written by an identity its ACLs let write that topic.
            writers = await conn.fetch(
                """SELECT DISTINCT event->'producer'->>'service' AS service, topic FROM audit.events
                   WHERE event IS NOT NULL AND topic LIKE $1""",
                f"{topic_prefix}%",
            )
            plan = acl_plan(topic_prefix)
            assert {w["service"] for w in writers} >= {"intake", "planner", "policy", "executor-commerce"}
            for w in writers:
                identity = identity_of(w["service"])
                assert identity and granted(plan, identity, "Write", "topic", w["topic"]), dict(w)
        finally:
            await conn.close()


async def refund_proposal(conn, ticket_id: str) -> ActionProposedV1:
    chain = await ticket_events(conn, ticket_id)
    proposed = [e for e in chain if e["type"] == "action.proposed"]
    event = ActionProposedV1.model_validate({k: v for k, v in proposed[-1].items() if not k.startswith("_")})
    assert event.payload.tool == "payments.issue_refund"
    return event


async def decisions_with_rule(conn, ticket_id: str, rule: str, timeout: float = 30) -> list[dict]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        chain = await ticket_events(conn, ticket_id)
        found = [
            e["payload"] for e in chain if e["type"] == "action.decided" and rule in e["payload"]["rule_ids"]
        ]
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


def approval_of(approval_id: str, proposed: ActionProposedV1) -> ApprovalDecidedV1:
    return proposed.answer(
        ApprovalDecidedV1,
        producer=Producer(service="escalation", version="test", instance="test"),
        payload=ApprovalDecision(
            approval_id=approval_id,
            proposal=proposed.payload,
            approved=True,
            approver="user:alice",
            role="refund-approver",
        ),
    )
