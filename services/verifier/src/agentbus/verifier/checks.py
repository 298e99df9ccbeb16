"""Post-conditions per tool: read the system of record back and say whether the effect is there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
from agentbus.shared.events import Execution
from agentbus.shared.tools import HttpCheck

Check = Callable[[asyncpg.Pool, Execution], Awaitable[tuple[bool, dict[str, Any]]]]


async def refund_exists(pool: asyncpg.Pool, ex: Execution) -> tuple[bool, dict[str, Any]]:
    row = await pool.fetchrow("SELECT * FROM sor.refunds WHERE idempotency_key = $1", ex.idempotency_key)
    if row is None:
        return False, {"refund": None}
    ok = row["order_id"] == ex.args["order_id"] and row["amount_cents"] == ex.args["amount_cents"]
    return ok, {
        "refund_id": row["id"],
        "order_id": row["order_id"],
        "amount_cents": row["amount_cents"],
    }


async def label_exists(pool: asyncpg.Pool, ex: Execution) -> tuple[bool, dict[str, Any]]:
    row = await pool.fetchrow(
        "SELECT * FROM sor.return_labels WHERE idempotency_key = $1", ex.idempotency_key
    )
    if row is None:
        return False, {"label": None}
    return row["order_id"] == ex.args["order_id"], {
        "label_id": row["id"],
        "order_id": row["order_id"],
    }


async def reply_exists(pool: asyncpg.Pool, ex: Execution) -> tuple[bool, dict[str, Any]]:
    row = await pool.fetchrow(
        "SELECT id, ticket_id FROM sor.ticket_replies WHERE idempotency_key = $1",
        ex.idempotency_key,
    )
    ok = row is not None and row["ticket_id"] == ex.args["ticket_id"]
    return ok, {"reply_id": row["id"] if row else None}


async def ticket_closed(pool: asyncpg.Pool, ex: Execution) -> tuple[bool, dict[str, Any]]:
    status = await pool.fetchval("SELECT status FROM sor.tickets WHERE id = $1", ex.args["ticket_id"])
    return status == "closed", {"ticket_status": status}


async def reset_link_exists(pool: asyncpg.Pool, ex: Execution) -> tuple[bool, dict[str, Any]]:
    row = await pool.fetchrow(
        "SELECT id, user_id, expires_at FROM sor.password_reset_links WHERE idempotency_key = $1",
        ex.idempotency_key,
    )
    if row is None:
        return False, {"reset_link": None}
    return row["user_id"] == ex.args["user_id"], {
        "link_id": row["id"],
        "user_id": row["user_id"],
        "expires_at": row["expires_at"].isoformat(),
    }


async def membership_present(pool: asyncpg.Pool, ex: Execution) -> tuple[bool, dict[str, Any]]:
    row = await pool.fetchrow(
        "SELECT granted_by_key FROM sor.group_memberships WHERE user_id = $1 AND group_id = $2",
        ex.args["user_id"],
        ex.args["group_id"],
    )
    if row is None:
        return False, {"membership": None}
    return True, {
        "user_id": ex.args["user_id"],
        "group_id": ex.args["group_id"],
        "granted_by_this_action": row["granted_by_key"] == ex.idempotency_key,
    }


async def read_only(pool: asyncpg.Pool, ex: Execution) -> tuple[bool, dict[str, Any]]:
    return True, {"note": "read-only tool: nothing to verify"}


# Post-conditions by the id a tool declares as `check` in the tool registry.
CHECKS: dict[str, Check] = {
    "read_only": read_only,
    "refund_exists_with_amount": refund_exists,
    "label_exists_for_order": label_exists,
    "reply_recorded": reply_exists,
    "ticket_closed": ticket_closed,
    "reset_link_exists_for_key": reset_link_exists,
    "membership_present": membership_present,
}


async def http_read_back(
    client: httpx.AsyncClient, check: HttpCheck, ex: Execution
) -> tuple[bool, dict[str, Any]]:
    """GET the resource the call should have created and compare the declared fields."""
    values = {
        **{f"args_{k}": v for k, v in ex.args.items()},
        **{f"result_{k}": v for k, v in ex.result.items()},
    }
    try:
        url = check.url.format(**values)
        expected = {field: template.format(**values) for field, template in check.expect.items()}
    except KeyError as exc:
        return False, {"error": f"verify template needs {exc}"}
    try:
        response = await client.get(url, headers={"Accept": "application/json"}, timeout=10)
    except httpx.HTTPError as exc:
        return False, {"url": url, "error": f"{type(exc).__name__}: {exc}"}
    if response.status_code != 200:
        return False, {"url": url, "status": response.status_code}
    body = response.json()
    found = {field: str(body.get(field)) for field in expected}
    return found == expected, {"url": url, "expected": expected, "found": found}
