"""Shadow rollout: the demo runs with both bundles in shadow mode; nothing executes, and each
trace shows what would have run (the decision, and a handoff naming the action)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from agentbus.cli import client, demo
from agentbus.shared.db import connect
from agentbus.shared.status import FINAL
from agentbus.trace_sink.store import ticket_events

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def shadow_policies(tmp_path: Path) -> Path:
    root = tmp_path / "policies"
    shutil.copytree(REPO / "policies", root)
    for toml in root.glob("*/bundle.toml"):
        text, n = re.subn(r'^rollout = "\w+"', 'rollout = "shadow"', toml.read_text(), flags=re.M)
        assert n == 1
        toml.write_text(text)
    return root


async def test_demo_in_shadow_mode_executes_nothing(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    extra = {"AGENTBUS_POLICIES_DIR": str(shadow_policies(tmp_path))}
    async with start_stack(
        broker, server_database_url, topic_prefix, tmp_path / "state", extra_env=extra
    ) as stack:
        tickets = {label: body for label, body, _ in demo.demo_set() if isinstance(body, dict)}
        await client.publish(stack.settings(), [client.ticket_event(t) for t in tickets.values()])
        ids = {label: t["ticket_id"] for label, t in tickets.items()}
        statuses = await client.wait_for(server_database_url, list(ids.values()), timeout=90, until=FINAL)
        assert set(statuses.values()) == {"escalated"}, statuses

        conn = await connect(server_database_url)
        try:
            for table in (
                "executor.effects",
                "sor.refunds",
                "sor.return_labels",
                "sor.ticket_replies",
                "sor.group_memberships",
                "sor.password_reset_links",
            ):
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
            for label, ticket_id in ids.items():
                chain = await ticket_events(conn, ticket_id)
                kinds = [e["type"] for e in chain]
                assert "action.executed" not in kinds, label
                if label == "non-refund question":
                    continue  # never reached an action: out of scope at intake
                [decided] = [e["payload"] for e in chain if e["type"] == "action.decided"]
                assert decided["rollout"] == "shadow" and "rollout.shadow" in decided["rule_ids"]
                assert decided["capability"] is None
                [handoff] = [e["payload"] for e in chain if e["type"] == "escalation.requested"]
                assert handoff["reason"] == "shadow_mode"
                assert f"would have run {decided['proposal']['tool']}" in handoff["summary"]
        finally:
            await conn.close()
