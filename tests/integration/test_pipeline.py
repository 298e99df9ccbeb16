"""The refunds workflow end to end: every service its own process, real broker, real Postgres."""

from __future__ import annotations

import pytest

from agentbus.cli import client, demo
from agentbus.shared.db import connect
from agentbus.trace_sink.store import ticket_events


pytestmark = pytest.mark.integration

STEPS_OF_A_RESOLVED_REFUND = [
    "ticket.received",
    "task.classified",
    *["action.proposed", "action.decided", "action.executed", "action.verified"] * 5,
    "task.finished",
]


async def test_demo_tickets_reach_their_final_states(start_stack, broker, database_url, topic_prefix, tmp_path):
    async with start_stack(broker, database_url, topic_prefix, tmp_path) as stack:
        settings = stack.settings()
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
            assert all(e["policy_version"].startswith("sha256:") for e in chain if e["type"] == "action.decided")

            dead = await ticket_events(conn, malformed_key)
            assert [e["type"] for e in dead] == ["deadletter.recorded"]
            assert dead[0]["payload"]["error_type"] == "malformed"
        finally:
            await conn.close()
