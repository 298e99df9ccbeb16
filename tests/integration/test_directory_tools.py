"""Directory tools and their post-conditions against a fresh, migrated and seeded database: one
effect per idempotency key, refusals for unknown or disabled users, and the it_access state machine
walked over the real tools (everything but policy and the broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from agentbus.cli import demo
from agentbus.executor.errors import ToolError
from agentbus.executor.tools import BUILTINS
from agentbus.planner.workflows import Transition, it_access
from agentbus.shared.db import create_pool, migrate
from agentbus.shared.events import Execution, Verification
from agentbus.shared.tools import load_registry
from agentbus.verifier.checks import CHECKS

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    await demo.seed(database_url)
    pool = await create_pool(database_url)
    try:
        yield pool
    finally:
        await pool.close()


REGISTRY = load_registry()


async def call(pool: asyncpg.Pool, tool: str, args: dict[str, Any], key: str) -> dict[str, Any]:
    return await BUILTINS[tool](pool, args, key)


async def check(
    pool: asyncpg.Pool, tool: str, args: dict[str, Any], key: str, result: dict[str, Any]
) -> tuple[str, bool, dict[str, Any]]:
    spec = REGISTRY.get(tool)
    assert spec is not None
    name, run = spec.check, CHECKS[spec.check]
    ex = Execution(
        action_id="act-T-1-1", tool=tool, args=args, idempotency_key=key, status="succeeded", result=result
    )
    ok, evidence = await run(pool, ex)
    return name, ok, evidence


async def test_get_user_reports_status_tenant_groups_and_the_group_asked_about(pool) -> None:
    user = await call(pool, "directory.get_user", {"user_id": "U-100"}, "k0")
    assert user == {
        "found": True,
        "user_id": "U-100",
        "status": "active",
        "tenant_id": "acme",
        "manager_id": "U-101",
        "groups": [],
    }
    with_group = await call(
        pool, "directory.get_user", {"user_id": "U-102", "group_id": "grp-prod-admin"}, "k"
    )
    assert with_group["status"] == "disabled"
    assert with_group["group_found"] is True
    assert with_group["group_admin"] is True
    assert with_group["group_tenant"] == "acme"
    missing = await call(pool, "directory.get_user", {"user_id": "U-999", "group_id": "grp-nope"}, "k")
    assert missing == {
        "found": False,
        "user_id": "U-999",
        "group_id": "grp-nope",
        "group_found": False,
        "group_admin": None,
        "group_tenant": None,
    }


async def test_password_reset_is_one_link_per_key_and_never_a_secret(pool) -> None:
    args = {"user_id": "U-100"}
    first = await call(pool, "directory.send_password_reset", args, "acme:T-1:1:reset")
    again = await call(pool, "directory.send_password_reset", args, "acme:T-1:1:reset")
    assert again == first
    assert first["link_id"].startswith("PRL-")
    assert first["sent_to"] == "d***@example.com"
    assert datetime.fromisoformat(first["expires_at"]) > datetime.now().astimezone()
    assert set(first) == {"link_id", "user_id", "expires_at", "sent_to"}
    links = await pool.fetch("SELECT * FROM sor.password_reset_links WHERE user_id = 'U-100'")
    assert len(links) == 1
    other = await call(pool, "directory.send_password_reset", args, "acme:T-2:1:reset")
    assert other["link_id"] != first["link_id"]

    name, ok, evidence = await check(pool, "directory.send_password_reset", args, "acme:T-1:1:reset", first)
    assert (name, ok) == ("reset_link_exists_for_key", True)
    assert evidence["link_id"] == first["link_id"]
    _, ok, evidence = await check(pool, "directory.send_password_reset", args, "acme:T-9:1:reset", first)
    assert ok is False and evidence == {"reset_link": None}


@pytest.mark.parametrize(
    ("user_id", "error"),
    [("U-102", "user U-102 is disabled, not active"), ("U-999", "user U-999 does not exist")],
)
async def test_password_reset_refuses_disabled_and_unknown_users(pool, user_id: str, error: str) -> None:
    with pytest.raises(ToolError, match=error):
        await call(pool, "directory.send_password_reset", {"user_id": user_id}, f"k-{user_id}")
    assert await pool.fetchval("SELECT count(*) FROM sor.password_reset_links") == 0


async def test_add_to_group_is_one_membership_per_key_and_per_user_and_group(pool) -> None:
    args = {"user_id": "U-100", "group_id": "grp-analytics"}
    first = await call(pool, "directory.add_to_group", args, "acme:T-1:1:grant")
    again = await call(pool, "directory.add_to_group", args, "acme:T-1:1:grant")
    assert first == again == {"user_id": "U-100", "group_id": "grp-analytics", "already_member": False}
    other_key = await call(pool, "directory.add_to_group", args, "acme:T-2:1:grant")
    assert other_key["already_member"] is True
    rows = await pool.fetch("SELECT * FROM sor.group_memberships WHERE user_id = 'U-100'")
    assert [(r["group_id"], r["granted_by_key"]) for r in rows] == [("grp-analytics", "acme:T-1:1:grant")]
    user = await call(pool, "directory.get_user", {"user_id": "U-100"}, "k")
    assert user["groups"] == ["grp-analytics"]

    name, ok, evidence = await check(pool, "directory.add_to_group", args, "acme:T-1:1:grant", first)
    assert (name, ok, evidence["granted_by_this_action"]) == ("membership_present", True, True)
    _, ok, _ = await check(
        pool, "directory.add_to_group", {"user_id": "U-101", "group_id": "grp-analytics"}, "k", first
    )
    assert ok is False


async def test_a_key_cannot_grant_a_second_membership(pool) -> None:
    await call(pool, "directory.add_to_group", {"user_id": "U-100", "group_id": "grp-wiki"}, "key-1")
    with pytest.raises(ToolError, match="already granted another membership"):
        await call(pool, "directory.add_to_group", {"user_id": "U-101", "group_id": "grp-wiki"}, "key-1")


@pytest.mark.parametrize(
    ("user_id", "group_id", "error"),
    [
        ("U-999", "grp-wiki", "user U-999 does not exist"),
        ("U-100", "grp-nope", "group grp-nope does not exist"),
        ("U-102", "grp-wiki", "user U-102 is disabled, not active"),
        ("U-100", "grp-globex", "belong to different tenants"),
    ],
    ids=["unknown_user", "unknown_group", "disabled_user", "other_tenant"],
)
async def test_add_to_group_refusals(pool, user_id: str, group_id: str, error: str) -> None:
    await pool.execute(
        "INSERT INTO sor.directory_groups (id, tenant_id, name) VALUES ('grp-globex', 'globex', 'G')"
    )
    with pytest.raises(ToolError, match=error):
        await call(pool, "directory.add_to_group", {"user_id": user_id, "group_id": group_id}, "k")
    assert await pool.fetchval("SELECT count(*) FROM sor.group_memberships") == 0


async def test_reseeding_with_reset_undoes_demo_grants_and_links(pool, database_url: str) -> None:
    await call(pool, "directory.add_to_group", {"user_id": "U-100", "group_id": "grp-wiki"}, "k1")
    await call(pool, "directory.send_password_reset", {"user_id": "U-100"}, "k2")
    await pool.execute("UPDATE sor.directory_users SET status = 'disabled' WHERE id = 'U-100'")
    await demo.seed(database_url, reset=True)
    assert await pool.fetchval("SELECT count(*) FROM sor.group_memberships") == 0
    assert await pool.fetchval("SELECT count(*) FROM sor.password_reset_links") == 0
    assert await pool.fetchval("SELECT status FROM sor.directory_users WHERE id = 'U-100'") == "active"


async def walk(pool: asyncpg.Pool, t: Transition | None) -> Transition:
    """Drive the state machine over the real tools and checks, every proposal taken as allowed."""
    assert t is not None
    while t.proposal is not None:
        p = t.proposal
        result = await call(pool, p.tool, dict(p.args), p.idempotency_key)
        _, ok, evidence = await check(pool, p.tool, dict(p.args), p.idempotency_key, result)
        verification = Verification(
            action_id=p.action_id, tool=p.tool, verified=ok, check="c", evidence=evidence, result=result
        )
        nxt = it_access.on_verified(t.state, verification)
        assert nxt is not None
        t = nxt
    return t


async def test_password_reset_for_u100_resolves_over_the_real_tools(pool) -> None:
    t = await walk(pool, it_access.start("T-PR", "acme", "password_reset", "U-100", None))
    assert t.finished is not None and t.finished.outcome == "resolved"
    link = await pool.fetchrow("SELECT * FROM sor.password_reset_links WHERE user_id = 'U-100'")
    assert link["idempotency_key"] == "acme:T-PR:1:directory.send_password_reset"
    reply = await pool.fetchval("SELECT body FROM sor.ticket_replies WHERE ticket_id = 'T-PR'")
    assert link["id"] in reply and "d***@example.com" in reply
    assert await pool.fetchval("SELECT status FROM sor.tickets WHERE id = 'T-PR'") == "closed"


async def test_admin_group_request_reaches_the_grant_with_admin_facts(pool) -> None:
    t = it_access.start("T-GA", "acme", "group_access", "U-100", "grp-prod-admin")
    assert t is not None and t.proposal is not None
    p = t.proposal
    result = await call(pool, p.tool, dict(p.args), p.idempotency_key)
    t2 = it_access.on_verified(
        t.state, Verification(action_id=p.action_id, tool=p.tool, verified=True, check="c", result=result)
    )
    assert t2 is not None and t2.proposal is not None
    assert t2.proposal.tool == "directory.add_to_group"
    assert t2.proposal.context["group_admin"] is True


async def test_disabled_user_escalates_with_nothing_written(pool) -> None:
    t = await walk(pool, it_access.start("T-DIS", "acme", "password_reset", "U-102", None))
    assert t.escalation is not None and t.escalation.reason == "not_eligible"
    assert await pool.fetchval("SELECT count(*) FROM sor.password_reset_links") == 0
    assert await pool.fetchval("SELECT count(*) FROM sor.ticket_replies") == 0
