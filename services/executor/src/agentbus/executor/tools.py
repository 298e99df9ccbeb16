"""Reference tools against the demo systems of record (schema `sor`); each write is keyed by the
action's idempotency key, as a real payment or carrier API would be."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .errors import ToolError

ToolFn = Callable[[asyncpg.Pool, dict[str, Any], str], Awaitable[dict[str, Any]]]


def _short_id(prefix: str, key: str) -> str:
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:10].upper()}"


async def get_order(pool: asyncpg.Pool, args: dict[str, Any], key: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        """SELECT o.*, COALESCE((SELECT sum(amount_cents) FROM sor.refunds r
                                 WHERE r.order_id = o.id), 0) AS refunded_cents
           FROM sor.orders o WHERE o.id = $1""",
        args["order_id"],
    )
    if row is None:
        return {"found": False, "order_id": args["order_id"]}
    return {
        "found": True,
        "order_id": row["id"],
        # The owner tenant, so that the log holds every fact policy decides a refund on (replay).
        "tenant_id": row["tenant_id"],
        "status": row["status"],
        "amount_cents": row["amount_cents"],
        "currency": row["currency"],
        "customer_matches": row["customer_id"] == args["customer_id"],
        "refunded_cents": int(row["refunded_cents"]),
        "item_title": row["item_title"],
    }


async def issue_refund(pool: asyncpg.Pool, args: dict[str, Any], key: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        existing = await conn.fetchrow("SELECT * FROM sor.refunds WHERE idempotency_key = $1", key)
        if existing is None:
            order = await conn.fetchrow("SELECT * FROM sor.orders WHERE id = $1 FOR UPDATE", args["order_id"])
            if order is None:
                raise ToolError(f"order {args['order_id']} does not exist")
            refunded = await conn.fetchval(
                "SELECT COALESCE(sum(amount_cents), 0) FROM sor.refunds WHERE order_id = $1",
                order["id"],
            )
            if refunded + args["amount_cents"] > order["amount_cents"]:
                raise ToolError(f"refund would exceed the order amount of {order['amount_cents']}")
            existing = await conn.fetchrow(
                """INSERT INTO sor.refunds (id, order_id, amount_cents, currency, idempotency_key)
                   VALUES ($1, $2, $3, $4, $5) RETURNING *""",
                _short_id("RF", key),
                order["id"],
                args["amount_cents"],
                args["currency"],
                key,
            )
    return {
        "refund_id": existing["id"],
        "order_id": existing["order_id"],
        "amount_cents": existing["amount_cents"],
        "currency": existing["currency"],
    }


async def create_return_label(pool: asyncpg.Pool, args: dict[str, Any], key: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        """INSERT INTO sor.return_labels (id, order_id, carrier, tracking_number, idempotency_key)
           VALUES ($1, $2, 'DemoPost', $3, $4)
           ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
           RETURNING *""",
        _short_id("LBL", key),
        args["order_id"],
        _short_id("TRK", key),
        key,
    )
    return {
        "label_id": row["id"],
        "order_id": row["order_id"],
        "tracking_number": row["tracking_number"],
    }


async def reply_to_customer(pool: asyncpg.Pool, args: dict[str, Any], key: str) -> dict[str, Any]:
    row = await pool.fetchrow(
        """INSERT INTO sor.ticket_replies (id, ticket_id, body, idempotency_key)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
           RETURNING id""",
        _short_id("RPL", key),
        args["ticket_id"],
        args["body"],
        key,
    )
    return {"reply_id": row["id"], "ticket_id": args["ticket_id"]}


async def close_ticket(pool: asyncpg.Pool, args: dict[str, Any], key: str) -> dict[str, Any]:
    await pool.execute(
        """INSERT INTO sor.tickets (id, tenant_id, status) VALUES ($1, $2, 'closed')
           ON CONFLICT (id) DO UPDATE SET status = 'closed', updated_at = now()""",
        args["ticket_id"],
        key.split(":", 1)[0],
    )
    return {"ticket_id": args["ticket_id"], "status": "closed"}


def _masked_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


async def get_user(pool: asyncpg.Pool, args: dict[str, Any], key: str) -> dict[str, Any]:
    """The user's status, tenant and groups; with `group_id`, also whether that group exists, is
    an admin group and which tenant owns it (the facts policy decides a grant on)."""
    user_id = args["user_id"]
    row = await pool.fetchrow("SELECT * FROM sor.directory_users WHERE id = $1", user_id)
    result: dict[str, Any]
    if row is None:
        result = {"found": False, "user_id": user_id}
    else:
        groups = await pool.fetch(
            "SELECT group_id FROM sor.group_memberships WHERE user_id = $1 ORDER BY group_id", user_id
        )
        result = {
            "found": True,
            "user_id": row["id"],
            "status": row["status"],
            "tenant_id": row["tenant_id"],
            "manager_id": row["manager_id"],
            "groups": [g["group_id"] for g in groups],
        }
    if args.get("group_id") is not None:
        group = await pool.fetchrow("SELECT * FROM sor.directory_groups WHERE id = $1", args["group_id"])
        result.update(
            group_id=args["group_id"],
            group_found=group is not None,
            group_admin=group["admin"] if group else None,
            group_tenant=group["tenant_id"] if group else None,
        )
    return result


async def _active_user(conn: asyncpg.Connection, user_id: str) -> asyncpg.Record:
    user = await conn.fetchrow("SELECT * FROM sor.directory_users WHERE id = $1", user_id)
    if user is None:
        raise ToolError(f"user {user_id} does not exist")
    if user["status"] != "active":
        raise ToolError(f"user {user_id} is {user['status']}, not active")
    return user


async def send_password_reset(pool: asyncpg.Pool, args: dict[str, Any], key: str) -> dict[str, Any]:
    """One reset link per key. The directory mails the secret link to the address on file; the
    result names the link's record and the masked address, never the link or its token."""
    async with pool.acquire() as conn, conn.transaction():
        link = await conn.fetchrow("SELECT * FROM sor.password_reset_links WHERE idempotency_key = $1", key)
        if link is None:
            await _active_user(conn, args["user_id"])
            link = await conn.fetchrow(
                """INSERT INTO sor.password_reset_links (id, user_id, idempotency_key, expires_at)
                   VALUES ($1, $2, $3, date_trunc('second', now()) + interval '1 hour')
                   ON CONFLICT (idempotency_key) DO NOTHING RETURNING *""",
                _short_id("PRL", key),
                args["user_id"],
                key,
            )
            if link is None:  # a concurrent call with the same key got there first
                link = await conn.fetchrow(
                    "SELECT * FROM sor.password_reset_links WHERE idempotency_key = $1", key
                )
        if link["user_id"] != args["user_id"]:
            raise ToolError(f"key {key} already sent a reset link to another user")
        email = await conn.fetchval("SELECT email FROM sor.directory_users WHERE id = $1", link["user_id"])
    return {
        "link_id": link["id"],
        "user_id": link["user_id"],
        "expires_at": link["expires_at"].isoformat(),
        "sent_to": _masked_email(email),
    }


async def add_to_group(pool: asyncpg.Pool, args: dict[str, Any], key: str) -> dict[str, Any]:
    """Make the user a member of the group. Idempotent by key, and by membership: a user who is
    already a member stays one (`already_member`), whoever granted it."""
    user_id, group_id = args["user_id"], args["group_id"]
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM sor.group_memberships WHERE granted_by_key = $1", key)
        if row is None:
            user = await _active_user(conn, user_id)
            group = await conn.fetchrow("SELECT * FROM sor.directory_groups WHERE id = $1", group_id)
            if group is None:
                raise ToolError(f"group {group_id} does not exist")
            if group["tenant_id"] != user["tenant_id"]:
                raise ToolError(f"user {user_id} and group {group_id} belong to different tenants")
            row = await conn.fetchrow(
                """INSERT INTO sor.group_memberships (user_id, group_id, granted_by_key)
                   VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING *""",
                user_id,
                group_id,
                key,
            )
            if row is None:  # already a member (or a concurrent call with this key won)
                row = await conn.fetchrow(
                    "SELECT * FROM sor.group_memberships WHERE user_id = $1 AND group_id = $2",
                    user_id,
                    group_id,
                )
        if (row["user_id"], row["group_id"]) != (user_id, group_id):
            raise ToolError(f"key {key} already granted another membership")
    return {
        "user_id": row["user_id"],
        "group_id": row["group_id"],
        "already_member": row["granted_by_key"] != key,
    }


# Implementations of the built-in tools declared in agentbus/shared/tools/builtin.toml.
BUILTINS: dict[str, ToolFn] = {
    "orders.get_order": get_order,
    "payments.issue_refund": issue_refund,
    "shipping.create_return_label": create_return_label,
    "helpdesk.reply_to_customer": reply_to_customer,
    "helpdesk.close_ticket": close_ticket,
    "directory.get_user": get_user,
    "directory.send_password_reset": send_password_reset,
    "directory.add_to_group": add_to_group,
}
