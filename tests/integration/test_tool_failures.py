"""Tools that answer 5xx or time out are retried within their policy, then reported as failed; the
ticket escalates with the evidence; the other tool groups keep serving meanwhile. A tool's output
is redacted before it is published, and the verifier reads an HTTP tool's effect back."""

from __future__ import annotations

import uuid

import builders
import pytest
from agentbus.cli import client, demo
from agentbus.shared.capabilities import load_signer
from agentbus.shared.db import connect
from agentbus.shared.events import ActionDecidedV1, Proposal
from agentbus.shared.status import FINAL
from agentbus.trace_sink.store import ticket_events
from payment_api import TOKEN, declaration

pytestmark = pytest.mark.integration


def allowed(signer, tool: str, amount: int) -> ActionDecidedV1:
    ticket = f"T-{uuid.uuid4().hex[:8]}"
    proposal = Proposal(
        action_id=f"act-{ticket}-1",
        workflow="refunds",
        agent="agent:refunds",
        tool=tool,
        args={"order_id": "ORD-1001", "amount_cents": amount},
        idempotency_key=f"acme:{ticket}:1:{tool}",
    )
    return builders.allowed(signer, proposal, ticket)


async def test_failing_tools_are_retried_reported_and_escalated_while_others_serve(
    start_stack, broker, server_database_url, topic_prefix, tmp_path, payment_api
):
    tools = tmp_path / "tools"
    tools.mkdir()
    # Two declarations of the same API: one answers 503, one is too slow for its 0.5 s timeout.
    (tools / "payments_api.toml").write_text(
        declaration(payment_api, "payments_api.refund", attempts=3)
        + declaration(payment_api, "payments_api.slow_refund", timeout_s=0.5, attempts=2)
    )
    state = tmp_path / "state"
    env = {"AGENTBUS_TOOLS_DIR": str(tools), "PAYMENTS_API_TOKEN": TOKEN}
    async with start_stack(broker, server_database_url, topic_prefix, state, extra_env=env) as stack:
        signer = load_signer(next((state / "keys" / "private").glob("*.key")), None, None, 3600)
        settings = stack.settings()

        # A working call first: redacted output and an HTTP read-back by the verifier.
        ok = allowed(signer, "payments_api.refund", 700)
        await client.publish(settings, [ok])
        conn = await connect(server_database_url)
        try:
            verified = await wait_event(conn, ok.ticket_id, "action.verified")
            assert verified["payload"]["verified"] and verified["payload"]["check"] == "http_read_back"
            [executed] = [
                e for e in await ticket_events(conn, ok.ticket_id) if e["type"] == "action.executed"
            ]
            assert executed["payload"]["status"] == "succeeded"
            result = executed["payload"]["result"]
            assert result["card_number"] == "[card]" and result["customer_email"] == "[email]"

            payment_api.fail_with = 503
            broken = allowed(signer, "payments_api.refund", 800)
            await client.publish(settings, [broken])
            # Meanwhile a ticket on the built-in tools (other executor groups) completes.
            ticket = demo.refund_ticket("ORD-1001")
            await client.publish(settings, [client.ticket_event(ticket)])
            assert (await client.wait_for(server_database_url, [ticket["ticket_id"]], 60, until=FINAL)) == {
                ticket["ticket_id"]: "resolved"
            }
            await assert_escalated(conn, broken.ticket_id, "503", "after 3 attempts")
            assert payment_api.attempts[broken.payload.proposal.idempotency_key] == 3
            ledger = await conn.fetchval(
                "SELECT status FROM executor.effects WHERE idempotency_key = $1",
                broken.payload.proposal.idempotency_key,
            )
            assert ledger == "failed"

            payment_api.fail_with, payment_api.delay_s = None, 2.0
            slow = allowed(signer, "payments_api.slow_refund", 900)
            await client.publish(settings, [slow])
            await assert_escalated(conn, slow.ticket_id, "outcome unknown", "after 2 attempts")
            ledger = await conn.fetchval(
                "SELECT status FROM executor.effects WHERE idempotency_key = $1",
                slow.payload.proposal.idempotency_key,
            )
            assert ledger == "unknown"  # it may have happened: resolved only by retrying this key
        finally:
            await conn.close()


async def wait_event(conn, ticket_id: str | None, kind: str, timeout: float = 60) -> dict:
    import asyncio

    for _ in range(int(timeout * 10)):
        found = [e for e in await ticket_events(conn, ticket_id or "") if e["type"] == kind]
        if found:
            return found[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {kind} for {ticket_id}")


async def assert_escalated(conn, ticket_id: str | None, *evidence: str) -> None:
    finished = await wait_event(conn, ticket_id, "task.finished")
    assert finished["payload"]["outcome"] == "escalated"
    [escalation] = [
        e for e in await ticket_events(conn, ticket_id or "") if e["type"] == "escalation.requested"
    ]
    assert escalation["payload"]["reason"] == "tool_failed"
    text = str(escalation["payload"]["details"]) + escalation["payload"]["summary"]
    for needle in evidence:
        assert needle in text, (needle, text)
