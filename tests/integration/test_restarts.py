"""Each service stopped and restarted (and some killed) while tickets flow: every ticket still
reaches a final state and no refund is issued twice."""

from __future__ import annotations

import asyncio
import signal

import pytest
from agentbus.cli import client, demo
from agentbus.shared.db import connect

pytestmark = pytest.mark.integration

ORDERS = [f"ORD-{2001 + n}" for n in range(32)]


async def test_services_restart_while_tickets_flow(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    async with start_stack(broker, server_database_url, topic_prefix, tmp_path) as stack:
        assert stack.supervisor is not None
        await demo.add_orders(server_database_url, (demo.Order(o, 1000) for o in ORDERS))
        settings = stack.settings()
        tickets = [demo.refund_ticket(order) for order in ORDERS]
        services = list(stack.supervisor.procs)  # every process, each executor tool group too
        batches = [tickets[i :: len(services)] for i in range(len(services))]
        for service, batch in zip(services, batches, strict=True):
            await client.publish(settings, [client.ticket_event(t) for t in batch])
            if service in ("planner", "executor-commerce"):
                # A crash: SIGKILL, the supervisor brings it back.
                await asyncio.to_thread(stack.supervisor.kill_service, service, signal.SIGKILL)
            else:
                await asyncio.to_thread(stack.supervisor.stop_service, service)
                await asyncio.sleep(0.5)
                await asyncio.to_thread(stack.supervisor.start_service, service)
            await asyncio.sleep(0.5)

        ids = [t["ticket_id"] for t in tickets]
        statuses = await client.wait_for(server_database_url, ids, timeout=180)
        assert sorted(set(statuses.values())) == ["resolved"], statuses
        restarted = {p["service"]: p["restarts"] for p in stack.supervisor.describe()}
        assert restarted["planner"] >= 1 and restarted["executor-commerce"] >= 1

        conn = await connect(server_database_url)
        try:
            rows = await conn.fetch(
                """SELECT order_id, count(*) AS n, sum(amount_cents) AS total
                   FROM sor.refunds GROUP BY order_id"""
            )
            per_order = {r["order_id"]: (r["n"], r["total"]) for r in rows}
            assert per_order == {order: (1, 1000) for order in ORDERS}
            labels = await conn.fetchval("SELECT count(*) FROM sor.return_labels")
            assert labels == len(ORDERS)
            closed = await conn.fetchval(
                "SELECT count(*) FROM sor.tickets WHERE status = 'closed' AND id = ANY($1)", ids
            )
            assert closed == len(ORDERS)
        finally:
            await conn.close()
