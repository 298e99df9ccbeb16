"""Crash test: the executor is SIGKILLed between the external call and its ledger commit, many
times at random points over 500 actions against a payment API with its own idempotency store.
The API records exactly one effect per key, and every action ends succeeded."""

from __future__ import annotations

import asyncio
import uuid

import builders
import pytest
from agentbus.cli import client
from agentbus.shared.capabilities import load_signer
from agentbus.shared.db import connect
from agentbus.shared.events import Proposal
from payment_api import TOKEN, declaration

pytestmark = pytest.mark.integration

ACTIONS = 500


async def test_sigkill_between_call_and_ledger_commit_never_acts_twice(
    start_stack, broker, server_database_url, topic_prefix, tmp_path, payment_api
):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "payments_api.toml").write_text(declaration(payment_api))
    env = {
        "AGENTBUS_TOOLS_DIR": str(tools),
        "PAYMENTS_API_TOKEN": TOKEN,
        "AGENTBUS_CHAOS_KILL_AFTER_CALL": "0.03",
    }
    state = tmp_path / "state"
    async with start_stack(
        broker, server_database_url, topic_prefix, state, services=["executor-payments-api"], extra_env=env
    ) as stack:
        signer = load_signer(next((state / "keys" / "private").glob("*.key")), None, None, 3600)
        assert signer is not None
        decisions = []
        for n in range(ACTIONS):
            ticket = f"T-{uuid.uuid4().hex[:8]}"
            proposal = Proposal(
                action_id=f"act-{ticket}-1",
                workflow="refunds",
                agent="agent:refunds",
                tool="payments_api.refund",
                args={"order_id": f"ORD-{1000 + n}", "amount_cents": 100 + n},
                idempotency_key=f"acme:{ticket}:1:payments_api.refund",
            )
            decisions.append(builders.allowed(signer, proposal, ticket))
        await client.publish(stack.settings(), decisions)

        conn = await connect(server_database_url)
        try:
            for _ in range(3000):
                done = await conn.fetchval(
                    """SELECT count(*) FROM executor.effects
                       WHERE tool = 'payments_api.refund' AND status = 'succeeded'"""
                )
                if done == ACTIONS:
                    break
                await asyncio.sleep(0.1)
            statuses = dict(await conn.fetch("SELECT status, count(*) FROM executor.effects GROUP BY status"))
        finally:
            await conn.close()
        assert stack.supervisor is not None
        kills = stack.supervisor.procs["executor-payments-api"].restarts

    assert statuses == {"succeeded": ACTIONS}
    keys = {d.payload.proposal.idempotency_key for d in decisions}
    assert set(payment_api.effects) == keys
    assert set(payment_api.effects.values()) == {1}  # exactly one effect per key
    assert kills >= 5, f"the executor was killed only {kills} times"
    # Calls repeated after a kill reached the API with the same key and created nothing new.
    assert sum(payment_api.attempts.values()) >= ACTIONS + kills - 1
    print(f"\n{ACTIONS} actions, {kills} SIGKILLs after the call, {sum(payment_api.attempts.values())} calls")
