"""The reconciler (DESIGN §3): the embedded broker is restarted mid-run and loses everything it held;
the reconciler re-drives each stalled ticket from the audit store, every ticket still resolves, and
nothing takes effect twice."""

from __future__ import annotations

import asyncio
import time

import pytest
from agentbus.cli import client, demo
from agentbus.cli.runtime import EmbeddedBroker
from agentbus.shared.db import connect
from agentbus.shared.status import FINAL

pytestmark = pytest.mark.integration

ORDERS = [f"ORD-{4000 + n}" for n in range(30)]
TOOLS_PER_REFUND = 5  # get_order, issue_refund, create_return_label, reply_to_customer, close_ticket
# What a refund needs (no console, no directory executor), and the reconciler.
SERVICES = [
    *("intake", "planner", "policy", "executor-commerce", "executor-helpdesk", "verifier", "escalation"),
    *("trace-sink", "reconciler"),
]
# Looked at after 5 s without a new event, every second: a ticket whose records the broker still
# holds is only queued and is left alone, one whose records the broker lost is re-driven.
FAST = {"AGENTBUS_RECONCILE_AFTER_S": "5", "AGENTBUS_RECONCILE_INTERVAL_S": "1"}


async def progress(database_url: str, ids: list[str]) -> tuple[int, int]:
    """(tickets stored as received, tickets finished)."""
    conn = await connect(database_url)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE type = 'ticket.received') AS received,
                      count(*) FILTER (WHERE type = 'task.finished') AS finished
               FROM audit.events WHERE ticket_id = ANY($1::text[])""",
            ids,
        )
        return row["received"], row["finished"]
    finally:
        await conn.close()


async def test_a_broker_that_lost_its_memory_mid_run_loses_no_ticket(
    start_stack, server_database_url, topic_prefix, tmp_path
):
    db = server_database_url
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    broker.start()
    try:
        async with start_stack(
            broker, db, topic_prefix, tmp_path / "stack", services=SERVICES, extra_env=FAST
        ) as stack:
            assert stack.supervisor is not None
            await demo.add_orders(db, (demo.Order(o, 500) for o in ORDERS))
            tickets = [demo.refund_ticket(order) for order in ORDERS]
            ids = [t["ticket_id"] for t in tickets]
            await client.publish(stack.settings(), [client.ticket_event(t) for t in tickets])

            # Every ticket is in the audit store (a ticket the store never saw is the upstream's to
            # resend), a quarter have finished, the rest are somewhere in the pipeline.
            deadline = time.monotonic() + 180
            while True:
                received, finished = await progress(db, ids)
                if received == len(ids) and finished >= len(ids) // 4:
                    break
                assert time.monotonic() < deadline, f"no progress: {received} received, {finished} finished"
                await asyncio.sleep(0.05)
            before = await client.wait_for(db, ids, timeout=0, until=FINAL)
            in_flight = [tid for tid, status in before.items() if status not in FINAL]
            assert in_flight, "every ticket finished before the broker was restarted"

            await asyncio.to_thread(broker.restart)

            statuses = await client.wait_for(db, ids, timeout=240, until=FINAL)
            assert sorted(set(statuses.values())) == ["resolved"], statuses

            conn = await connect(db)
            try:
                refunds = await conn.fetch(
                    "SELECT order_id, count(*) AS n, sum(amount_cents) AS cents FROM sor.refunds GROUP BY 1"
                )
                assert {r["order_id"]: (r["n"], r["cents"]) for r in refunds} == {o: (1, 500) for o in ORDERS}
                assert await conn.fetchval("SELECT count(*) FROM sor.return_labels") == len(ORDERS)
                replies = await conn.fetch(
                    "SELECT ticket_id, count(*) AS n FROM sor.ticket_replies GROUP BY 1"
                )
                assert {r["ticket_id"]: r["n"] for r in replies} == dict.fromkeys(ids, 1)
                effects = await conn.fetch("SELECT action_id, status FROM executor.effects")
                assert len(effects) == len({e["action_id"] for e in effects}) == TOOLS_PER_REFUND * len(ids)
                assert {e["status"] for e in effects} == {"succeeded"}
                finished = await conn.fetch(
                    """SELECT ticket_id, count(*) AS n FROM audit.events
                       WHERE type = 'task.finished' GROUP BY 1"""
                )
                assert {r["ticket_id"]: r["n"] for r in finished} == dict.fromkeys(ids, 1)
            finally:
                await conn.close()

            log = (tmp_path / "stack" / "logs" / "reconciler.log").read_text()
            redriven = {tid for tid in in_flight if f"re-drove {tid} " in log}
            assert redriven, f"the reconciler re-drove none of {in_flight}:\n{log[-3000:]}"
    finally:
        broker.stop()
