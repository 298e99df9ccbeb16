"""Re-drive (DESIGN §5): a finished run of 100 tickets republished from the audit store, to every
stage and to the executor alone, takes no effect twice and changes no outcome."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import builders
import httpx
import pytest
from agentbus.cli import client, demo
from agentbus.cli.main import app
from agentbus.executor.handlers import ExecutorHandlers
from agentbus.executor.store import PgEffectLedger
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import Signer, Verifier
from agentbus.shared.db import create_pool, migrate
from agentbus.shared.events import new_event_id
from agentbus.shared.lag import consumer_lag
from agentbus.shared.settings import Settings
from agentbus.shared.status import FINAL, SETTLED
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from effects import audit_counts, diff, outcomes, snapshot
from test_executor_capabilities import decided
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer alice-demo-token"}  # refund-approver, it-approver
# Every service but the console, which this test does not look at.
SERVICES = ["intake", "planner", "policy", "executor", "verifier", "escalation", "trace-sink", "reconciler"]

# 100 tickets: autonomous refunds, refunds for approval, refunds above the limit, orders in transit,
# questions, password resets and admin group requests (approval).
AUTONOMOUS = [f"ORD-{3000 + n}" for n in range(50)]  # $5: resolved
APPROVAL = [f"ORD-{3100 + n}" for n in range(8)]  # $40: awaiting approval; 4 approved, 2 rejected
DENIED = [f"ORD-{3200 + n}" for n in range(8)]  # $80: escalated
IN_TRANSIT = [f"ORD-{3300 + n}" for n in range(6)]  # escalated, not eligible


ORDERS = [
    *(demo.Order(o, 500) for o in AUTONOMOUS),
    *(demo.Order(o, 4000) for o in APPROVAL),
    *(demo.Order(o, 8000) for o in DENIED),
    *(demo.Order(o, 1500, status="in_transit") for o in IN_TRANSIT),
]


def tickets() -> list[dict[str, Any]]:
    orders = [*AUTONOMOUS, *APPROVAL, *DENIED, *IN_TRANSIT]
    resets = [
        demo.it_access_ticket("Locked out", "Hi, I forgot my password and I am locked out. Please reset it.")
        for _ in range(8)
    ]
    admins = [
        demo.it_access_ticket("Access request", "Please add me to grp-prod-admin, I am on call this week.")
        for _ in range(10)
    ]
    questions = [demo.question_ticket() for _ in range(10)]
    return [*(demo.refund_ticket(o) for o in orders), *resets, *admins, *questions]


async def wait_quiet(stack: Any, timeout: float = 300.0) -> None:
    """Until no consumer group has anything left to read, twice in a row."""
    assert stack.supervisor is not None
    names = [n for n in stack.supervisor.procs if n != "console"]
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        lag = await consumer_lag(stack.settings(), names)
        quiet = quiet + 1 if all(n == 0 for n in lag.values()) else 0
        assert time.monotonic() < deadline, f"still busy after {timeout:.0f}s: {lag}"
        await asyncio.sleep(0.5)


async def decide_approvals(stack: Any) -> list[str]:
    """Approve four refunds and two admin grants, reject two refunds; the tickets decided."""
    async with httpx.AsyncClient(base_url=stack.approvals_url, timeout=15) as http:
        response = await http.get("/approvals", params={"status": "pending"}, headers=ALICE)
        pending = response.json()["approvals"]
        refunds = [a for a in pending if a["tool"] == "payments.issue_refund"]
        grants = [a for a in pending if a["tool"] == "directory.add_to_group"]
        assert len(refunds) == len(APPROVAL) and len(grants) == 10, pending
        verdicts = [
            *((a, "approve") for a in refunds[:4]),
            *((a, "reject") for a in refunds[4:6]),
            *((a, "approve") for a in grants[:2]),
        ]
        for approval, verb in verdicts:
            answer = await http.post(
                f"/approvals/{approval['id']}/{verb}", headers=ALICE, json={"reason": "t"}
            )
            assert answer.status_code == 200, answer.text
        return [approval["ticket_id"] for approval, _ in verdicts]


def redrive(stack: Any, *args: str) -> str:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "DATABASE_URL": stack.database_url,
        "AGENTBUS_TOPIC_PREFIX": stack.topic_prefix,
    }
    result = CliRunner().invoke(app, ["replay", "redrive", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


# About 2,200 events, then all of them again: minutes, not seconds, on a busy two-core machine.
@pytest.mark.timeout(900)
async def test_redriving_a_finished_run_changes_nothing(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    db = server_database_url
    start = datetime.now(UTC) - timedelta(seconds=1)
    async with start_stack(broker, db, topic_prefix, tmp_path, services=SERVICES) as stack:
        await demo.add_orders(db, ORDERS)
        batch = tickets()
        ids = [t["ticket_id"] for t in batch]
        assert len(ids) == 100
        await client.publish(stack.settings(), [client.ticket_event(t) for t in batch])
        first = await client.wait_for(db, ids, timeout=400)
        assert set(first.values()) <= SETTLED, first
        decided = await decide_approvals(stack)
        assert set((await client.wait_for(db, decided, timeout=60, until=FINAL)).values()) <= FINAL
        await wait_quiet(stack)

        effects, finished, stored = await snapshot(db), await outcomes(db, ids), await audit_counts(db)
        statuses = sorted(s for s, _ in finished.values())
        assert statuses.count("resolved") == 50 + 8 + 4 + 2, statuses
        assert statuses.count("awaiting_approval") == 2 + 8
        assert len(effects["sor.refunds"]) == 54 and len(effects["sor.password_reset_links"]) == 8
        assert all(len(f) <= 1 for _, f in finished.values())

        # Every stage, every event of the run.
        everything = await asyncio.to_thread(redrive, stack, "--since", start.isoformat())
        replayable = stored.total() - stored["deadletter.recorded"] - stored["control.switch"]
        assert f"re-drove {replayable} events of 100 tickets to every consumer" in everything
        await wait_quiet(stack)
        assert diff(effects, await snapshot(db)) == {}
        assert await outcomes(db, ids) == finished
        assert await audit_counts(db) == stored  # each answer to a redelivery is the answer stored

        # The executor alone: every decision again, other consumers of the topic skip them.
        executor = await asyncio.to_thread(
            redrive, stack, "--since", start.isoformat(), "--stage", "executor"
        )
        assert f"re-drove {stored['action.decided']} events" in executor and "to executor" in executor
        await wait_quiet(stack)
        assert diff(effects, await snapshot(db)) == {}
        assert await outcomes(db, ids) == finished
        assert await audit_counts(db) == stored


async def test_a_decision_redriven_after_its_capability_expired_gets_its_first_answer(server_database_url):
    """Re-drives come long after the fact: the executor answers a decision event it acted on from its
    ledger, even once the capability has expired. Another event with that capability is refused."""
    await migrate(server_database_url)
    await demo.seed(server_database_url)
    pool = await create_pool(server_database_url)
    try:
        key = Ed25519PrivateKey.generate()
        executor = ExecutorHandlers(Bus(Settings(service="executor")), Verifier({"k1": key.public_key()}, 0))
        executor.pool, executor.ledger = pool, PgEffectLedger(pool)
        proposal = builders.proposal()  # $20 refund of ORD-1001
        capability = Signer("k1", key, ttl_s=1).issue(proposal, builders.TENANT)
        event = decided(proposal, capability)
        [first] = await executor.on_action_decided(event)
        assert first.payload.status == "succeeded" and not first.payload.duplicate

        await asyncio.sleep(1.5)
        [again] = await executor.on_action_decided(event)
        assert (again.event_id, again.payload.status, again.payload.duplicate) == (
            first.event_id,
            "succeeded",
            True,
        )
        assert again.payload.result == first.payload.result

        [replay] = await executor.on_action_decided(event.model_copy(update={"event_id": new_event_id()}))
        assert replay.payload.status == "refused" and "expired" in (replay.payload.error or "")
        assert await pool.fetchval("SELECT count(*) FROM sor.refunds") == 1
    finally:
        await pool.close()
