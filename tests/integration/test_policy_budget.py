"""Two policy replicas (two processes, one consumer group) and 200 concurrent refund proposals
against a $100 daily tenant budget: the budget is never exceeded, and both replicas took part."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest
from agentbus.cli import client
from agentbus.shared.db import connect
from agentbus.shared.events import ActionProposedV1, Producer, Proposal

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ORDERS = [f"ORD-{5000 + n}" for n in range(200)]
AMOUNT = 700  # $7.00: 14 fit in $100.00
DAILY = 10_000


def policies_with_budget(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(REPO / "policies", root)
    toml = root / "refunds" / "bundle.toml"
    text = toml.read_text()
    text = text.replace("per_day = 50000", f"per_day = {DAILY}")
    text = text.replace("per_minute = 60 ", "per_minute = 100000 ")  # the budget, not the rate, must bind
    assert f"per_day = {DAILY}" in text and "per_minute = 100000" in text
    toml.write_text(text)
    return root


def proposal_event(order_id: str) -> ActionProposedV1:
    ticket = f"T-{uuid.uuid4().hex[:8]}"
    return ActionProposedV1(
        ticket_id=ticket,
        tenant_id="acme",
        producer=Producer(service="planner", version="test", instance="budget-test"),
        payload=Proposal(
            action_id=f"act-{ticket}-1",
            workflow="refunds",
            agent="agent:refunds",
            tool="payments.issue_refund",
            args={"order_id": order_id, "amount_cents": AMOUNT, "currency": "USD"},
            idempotency_key=f"acme:{ticket}:1:payments.issue_refund",
        ),
    )


async def test_two_replicas_never_exceed_the_daily_budget(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    policies = policies_with_budget(tmp_path)
    async with start_stack(
        broker,
        server_database_url,
        topic_prefix,
        tmp_path / "state",
        services=["policy"],
        replicas={"policy": 2},
        extra_env={"AGENTBUS_POLICIES_DIR": str(policies)},
    ) as stack:
        conn = await connect(server_database_url)
        try:
            await conn.executemany(
                """INSERT INTO sor.orders (id, tenant_id, customer_id, amount_cents, currency, status)
                   VALUES ($1, 'acme', 'C-1', $2, 'USD', 'delivered')""",
                [(o, AMOUNT) for o in ORDERS],
            )
            await client.publish(stack.settings(), [proposal_event(o) for o in ORDERS])
            for _ in range(600):
                decided = await conn.fetchval("SELECT count(*) FROM policy.decisions")
                if decided >= len(ORDERS):
                    break
                await asyncio.sleep(0.1)
            rows = await conn.fetch("SELECT decision FROM policy.decisions")
            used = await conn.fetchval(
                "SELECT used FROM policy.budget_usage WHERE tenant_id = 'acme' AND budget = 'refunds'"
            )
        finally:
            await conn.close()

    payloads = [r["decision"]["payload"] for r in rows]
    assert len(payloads) == len(ORDERS)
    allowed = [p for p in payloads if p["verdict"] == "allow"]
    exhausted = [p for p in payloads if p["rule_ids"] == ["budget.exhausted"]]
    assert sum(p["proposal"]["args"]["amount_cents"] for p in allowed) <= DAILY
    assert len(allowed) == DAILY // AMOUNT  # the budget is used up, not merely respected
    assert len(exhausted) == len(ORDERS) - len(allowed)
    assert used == len(allowed) * AMOUNT
    assert all(p["capability"] for p in allowed) and not any(p["capability"] for p in exhausted)
    deciders = {r["decision"]["producer"]["instance"] for r in rows}
    assert len(deciders) == 2, f"both replicas should have decided, got {deciders}"
