"""Counterfactual replay of the demo: the stack records it, then `agentbus replay counterfactual`
re-decides it from the audit store under a bundle with a lower autonomous refund limit."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from agentbus.cli import client, demo
from agentbus.cli.main import app
from agentbus.shared.db import connect
from agentbus.shared.events import ActionProposedV1, ApprovalDecidedV1, ApprovalDecision, Producer
from agentbus.shared.status import FINAL
from agentbus.trace_sink.store import ticket_events
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def lowered_policies(root: Path) -> Path:
    """A copy of policies/ whose refunds bundle issues refunds up to $15.00 (not $25.00) unreviewed."""
    shutil.copytree(POLICIES, root)
    toml = root / "refunds" / "bundle.toml"
    text = toml.read_text()
    assert "autonomous_max_cents = 2500" in text
    toml.write_text(text.replace("autonomous_max_cents = 2500", "autonomous_max_cents = 1500", 1))
    return root


async def approve_pending_refund(settings, conn, ticket_id: str) -> None:
    approval_id = await conn.fetchval("SELECT id FROM escalation.approvals WHERE ticket_id = $1", ticket_id)
    proposed = [e for e in await ticket_events(conn, ticket_id) if e["type"] == "action.proposed"][-1]
    event = ActionProposedV1.model_validate({k: v for k, v in proposed.items() if not k.startswith("_")})
    approval = event.answer(
        ApprovalDecidedV1,
        ApprovalDecision(
            approval_id=approval_id,
            proposal=event.payload,
            approved=True,
            approver="user:alice",
            role="refund-approver",
        ),
        Producer(service="escalation", version="test", instance="test"),
    )
    await client.publish(settings, [approval])


async def settled(conn, timeout: float = 15) -> None:
    """Until every stored proposal has its stored decision (the trace sink reads topics on its own)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        proposed = await conn.fetchval("SELECT count(*) FROM audit.events WHERE type = 'action.proposed'")
        decided = await conn.fetchval(
            """SELECT count(*) FROM audit.events
               WHERE type = 'action.decided' AND event->'payload'->>'approval_id' IS NULL"""
        )
        if proposed == decided:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{proposed} proposals stored but {decided} decisions")


async def replay_cli(*args: str):
    return await asyncio.to_thread(CliRunner().invoke, app, ["replay", "counterfactual", *args])


async def test_a_lower_refund_limit_flips_exactly_the_20_dollar_refund(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    async with start_stack(broker, server_database_url, topic_prefix, tmp_path / "state") as stack:
        settings = stack.settings()
        tickets = {label: body for label, body, _ in demo.demo_set() if isinstance(body, dict)}
        ids = {label: t["ticket_id"] for label, t in tickets.items()}
        await client.publish(settings, [client.ticket_event(t) for t in tickets.values()])
        statuses = await client.wait_for(server_database_url, list(ids.values()), timeout=60)
        assert statuses[ids["ORD-1002 $40 refund"]] == "awaiting_approval", statuses
        conn = await connect(server_database_url)
        try:
            # The human path too: the $40 refund is approved and the ticket completes.
            await approve_pending_refund(settings, conn, ids["ORD-1002 $40 refund"])
            after = await client.wait_for(server_database_url, [ids["ORD-1002 $40 refund"]], 60, FINAL)
            assert after[ids["ORD-1002 $40 refund"]] == "resolved"
            await settled(conn)
        finally:
            await conn.close()

    db = ["--database-url", server_database_url, "--since", since]
    lowered = lowered_policies(tmp_path / "policies")
    result = await replay_cli("--policies", str(lowered), "--json", *db)
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)

    t1001 = ids["ORD-1001 $20 refund"]
    flips = [
        (d["ticket_id"], d["tool"], d["amount_cents"], d["recorded"], d["verdict"], d["rule_ids"])
        for d in report["decisions"]
        if d["flipped"]
    ]
    assert flips == [
        (t1001, "payments.issue_refund", 2000, "allow", "needs_approval", ["refund.needs_approval"])
    ]
    totals = report["totals"]
    # Every demo decision re-decided from the log alone: 5 for the $20 refund, 6 for the $40 one
    # (read, refund, approval, label, reply, close), 2 for the $80 one, 1 for the order in transit,
    # 4 for the password reset and 2 for the admin group request.
    assert totals == {
        "decisions": 20,
        "replayed": 20,
        "flipped": 1,
        "unchanged": 19,
        "undetermined": 0,
        "not_asked": 0,
        "skipped": 0,
        "after_flip": 3,  # label, reply and close of the $20 refund
    }
    assert report["money_at_stake"] == [
        {"from": "allow", "to": "needs_approval", "currency": "USD", "cents": 2000, "decisions": 1}
    ]
    assert report["no_longer_autonomous_cents"] == {"USD": 2000}
    assert report["newly_autonomous_cents"] == {}
    versions = {v["workflow"]: v["version"] for v in report["recorded_versions"]}
    replayed = {v["workflow"]: v["version"] for v in report["counterfactual_versions"]}
    assert versions.keys() == replayed.keys() == {"refunds", "it_access"}
    assert versions["refunds"] != replayed["refunds"] and versions["it_access"] == replayed["it_access"]
    approval = next(d for d in report["decisions"] if d["kind"] == "approval")
    assert (approval["recorded"], approval["verdict"], approval["rule_ids"]) == (
        "allow",
        "allow",
        ["approval.granted"],
    )

    # The bundle that made the decisions, replayed, changes none of them: the log holds the facts.
    same = await replay_cli("--policies", str(POLICIES), "--json", *db)
    assert orjson.loads(same.stdout)["totals"]["flipped"] == 0
    assert orjson.loads(same.stdout)["totals"]["undetermined"] == 0

    # The table, for the refunds bundle alone (the IT decisions are then out of scope).
    table = await replay_cli("--bundle", str(lowered / "refunds"), *db)
    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if line.startswith(t1001))
    assert "payments.issue_refund" in row and "allow -> needs_approval" in row and row.endswith("$20.00")
    assert "1 flipped" in table.stdout and "6 skipped" in table.stdout
    assert "no longer autonomous: $20.00" in table.stdout

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    empty = await replay_cli(
        "--policies", str(lowered), "--database-url", server_database_url, "--since", later
    )
    assert empty.exit_code == 1 and "nothing to replay" in empty.output
