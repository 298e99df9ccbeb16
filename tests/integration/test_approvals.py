"""Approvals end to end: a refund waits for a human, who approves or rejects it through the
escalation service's HTTP API or `agentbus approvals`, or lets it expire. Every service is its own
process on the real broker and Postgres."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentbus.cli import client, demo
from agentbus.escalation.openapi import SPEC
from agentbus.shared.db import connect
from agentbus.shared.status import FINAL
from agentbus.trace_sink.store import ticket_events
from jsonschema import Draft202012Validator

pytestmark = pytest.mark.integration

AGENTBUS = Path(sys.executable).with_name("agentbus")
ALICE = {"Authorization": "Bearer alice-demo-token"}  # refund-approver, it-approver
BOB = {"Authorization": "Bearer bob-demo-token"}  # viewer
# Everything but the console, which these tests do not look at.
SERVICES = ["intake", "planner", "policy", "executor", "verifier", "escalation", "trace-sink"]
APPROVAL = Draft202012Validator({**SPEC, "$ref": "#/components/schemas/Approval"})
FORBIDDEN = Draft202012Validator({**SPEC, "$ref": "#/components/schemas/Forbidden"})


async def submit(stack: Any, order_id: str) -> str:
    ticket = demo.refund_ticket(order_id)
    await client.publish(stack.settings(), [client.ticket_event(ticket)])
    return str(ticket["ticket_id"])


async def pending_approval(http: httpx.AsyncClient, ticket_id: str, timeout: float = 30) -> dict[str, Any]:
    """The ticket's approval once the escalation service has recorded it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await http.get("/approvals", params={"status": "pending"}, headers=BOB)
        assert response.status_code == 200, response.text
        found = [a for a in response.json()["approvals"] if a["ticket_id"] == ticket_id]
        if found:
            return found[0]
        assert asyncio.get_running_loop().time() < deadline, f"no pending approval for {ticket_id}"
        await asyncio.sleep(0.1)


async def refunds_of(database_url: str, order_id: str) -> list[int]:
    conn = await connect(database_url)
    try:
        rows = await conn.fetch("SELECT amount_cents FROM sor.refunds WHERE order_id = $1", order_id)
        return [r["amount_cents"] for r in rows]
    finally:
        await conn.close()


async def handoff_of(database_url: str, ticket_id: str) -> dict[str, Any]:
    conn = await connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM escalation.handoffs WHERE ticket_id = $1", ticket_id)
        assert row is not None, f"no handoff for {ticket_id}"
        return dict(row)
    finally:
        await conn.close()


async def test_an_approver_releases_a_refund_through_the_api(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    db = server_database_url
    async with start_stack(broker, db, topic_prefix, tmp_path, services=SERVICES) as stack:
        tid = await submit(stack, "ORD-1002")
        assert (await client.wait_for(db, [tid], timeout=30))[tid] == "awaiting_approval"

        async with httpx.AsyncClient(base_url=stack.approvals_url, timeout=15) as http:
            nobody = await http.get("/approvals")
            assert nobody.status_code == 401 and "bearer token" in nobody.json()["reason"]

            approval = await pending_approval(http, tid)
            APPROVAL.validate(approval)
            assert approval["tool"] == "payments.issue_refund" and approval["agent"] == "agent:refunds"
            assert approval["args"]["order_id"] == "ORD-1002" and approval["args"]["amount_cents"] == 4000
            assert approval["idempotency_key"].startswith(f"acme:{tid}:")
            assert "amount_cents = 4000" in approval["preview"]
            assert approval["required_role"] == "refund-approver"
            assert approval["rule_ids"] == ["refund.needs_approval"] and approval["reason"]
            assert approval["created_at"] < approval["expires_at"]
            aid = approval["id"]
            assert (await http.get(f"/approvals/{aid}", headers=BOB)).json() == approval
            assert (await http.get("/approvals/AP-0000000000", headers=BOB)).status_code == 404

            # A viewer may look but not decide, and is told which role it takes.
            refused = await http.post(f"/approvals/{aid}/approve", headers=BOB, json={"reason": "me"})
            assert refused.status_code == 403
            FORBIDDEN.validate(refused.json())
            assert "refund-approver" in refused.json()["reason"] and "viewer" in refused.json()["reason"]
            assert refused.json()["roles"] == ["viewer"]
            assert (await http.get(f"/approvals/{aid}", headers=BOB)).json()["status"] == "pending"
            assert await refunds_of(db, "ORD-1002") == []

            approved = await http.post(
                f"/approvals/{aid}/approve", headers=ALICE, json={"reason": "customer is right"}
            )
            assert approved.status_code == 200, approved.text
            body = approved.json()
            APPROVAL.validate(body)
            assert (body["status"], body["approver"], body["decided_reason"], body["published"]) == (
                "approved",
                "user:alice",
                "customer is right",
                True,
            )

            assert (await client.wait_for(db, [tid], timeout=30, until=FINAL))[tid] == "resolved"
            assert await refunds_of(db, "ORD-1002") == [4000]

            again = await http.post(f"/approvals/{aid}/approve", headers=ALICE, json={})
            assert again.status_code == 409 and "already approved by user:alice" in again.json()["reason"]
            assert again.json()["status"] == "approved"

        conn = await connect(db)
        try:
            chain = await ticket_events(conn, tid)
        finally:
            await conn.close()
        decided = [e for e in chain if e["type"] == "approval.decided"]
        assert len(decided) == 1
        asked = next(
            e for e in chain if e["type"] == "action.decided" and e["payload"]["verdict"] == "needs_approval"
        )
        assert decided[0]["causation_id"] == asked["event_id"] and decided[0]["step"] == asked["step"] + 1
        assert decided[0]["payload"]["approver"] == "user:alice"
        assert decided[0]["payload"]["role"] == "refund-approver"


def cli(*args: str, token: str | None, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTBUS_TOKEN", "AGENTBUS_STATE_DIR")}
    env["AGENTBUS_APPROVALS_URL"] = url
    if token:
        env["AGENTBUS_TOKEN"] = token
    return subprocess.run(
        [str(AGENTBUS), "approvals", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


async def test_approve_and_reject_with_the_cli(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    db = server_database_url
    async with start_stack(broker, db, topic_prefix, tmp_path / "stack", services=SERVICES) as stack:
        await demo.add_orders(db, [demo.Order("ORD-7001", 3000), demo.Order("ORD-7002", 4500)])
        keep, refuse = await submit(stack, "ORD-7001"), await submit(stack, "ORD-7002")
        async with httpx.AsyncClient(base_url=stack.approvals_url, timeout=15) as http:
            keep_id = (await pending_approval(http, keep))["id"]
            refuse_id = (await pending_approval(http, refuse))["id"]

        url = stack.approvals_url

        async def run(*args: str, token: str | None = "alice-demo-token") -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(cli, *args, token=token, url=url, cwd=tmp_path)

        # Each call is a process that imports the whole CLI: keep them few, and run independent
        # ones side by side. A viewer may list and show, but not decide.
        listed, shown, refused = await asyncio.gather(
            run("list", token="bob-demo-token"),
            run("show", keep_id, token="bob-demo-token"),
            run("approve", keep_id, token="bob-demo-token"),
        )
        assert listed.returncode == 0, listed.stderr
        rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
        assert set(rows) == {keep_id, refuse_id}
        assert "amount_cents=3000" in rows[keep_id] and "refund-approver" in rows[keep_id]
        assert shown.returncode == 0, shown.stderr
        assert f"ticket    {keep}" in shown.stdout and "+ amount_cents = 3000" in shown.stdout
        assert "needs role refund-approver" in shown.stdout
        assert refused.returncode == 2
        assert refused.stderr.startswith("refused: ") and "refund-approver" in refused.stderr

        approved, rejected = await asyncio.gather(
            run("approve", keep_id, "--reason", "fine"),
            run("reject", refuse_id, "--reason", "customer was already compensated"),
        )
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout.startswith(f"approved {keep_id}") and "as user:alice" in approved.stdout
        assert rejected.returncode == 0, rejected.stderr
        assert rejected.stdout.startswith(f"rejected {refuse_id}")

        outcomes = await client.wait_for(db, [keep, refuse], timeout=30, until=FINAL)
        assert outcomes == {keep: "resolved", refuse: "escalated"}
        assert await refunds_of(db, "ORD-7001") == [3000]
        assert await refunds_of(db, "ORD-7002") == []
        assert (await handoff_of(db, refuse))["reason"] == "approval_rejected"
        async with httpx.AsyncClient(base_url=url, timeout=15) as http:
            decided = (await http.get(f"/approvals/{refuse_id}", headers=BOB)).json()
        assert (decided["status"], decided["approver"], decided["decided_reason"]) == (
            "rejected",
            "user:alice",
            "customer was already compensated",
        )


async def test_an_approval_nobody_decides_expires_into_an_escalation(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    db = server_database_url
    short = {"AGENTBUS_APPROVAL_TTL_S": "2", "AGENTBUS_APPROVAL_SWEEP_INTERVAL_S": "0.5"}
    async with start_stack(broker, db, topic_prefix, tmp_path, services=SERVICES, extra_env=short) as stack:
        tid = await submit(stack, "ORD-1002")
        assert (await client.wait_for(db, [tid], timeout=30, until=FINAL))[tid] == "escalated"
        handoff = await handoff_of(db, tid)
        assert handoff["reason"] == "approval_expired"
        assert "refund-approver" in handoff["summary"] and "amount_cents = 4000" in handoff["summary"]
        assert await refunds_of(db, "ORD-1002") == []

        async with httpx.AsyncClient(base_url=stack.approvals_url, timeout=15) as http:
            [approval] = (await http.get("/approvals", params={"status": "expired"}, headers=BOB)).json()[
                "approvals"
            ]
            assert approval["ticket_id"] == tid and approval["published"] is True
            late = await http.post(f"/approvals/{approval['id']}/approve", headers=ALICE, json={})
            assert late.status_code == 409 and "already expired" in late.json()["reason"]
