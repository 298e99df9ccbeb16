"""Reference tools against the demo systems of record (schema `sor`); each write is keyed by the
action's idempotency key, as a real payment or carrier API would be."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg


class ToolError(Exception):
    """The system of record refused the call; the message says why."""


ToolFn = Callable[[asyncpg.Pool, dict[str, Any], str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool:
    name: str
    writes: bool
    run: ToolFn


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
        "status": row["status"],
        "amount_cents": row["amount_cents"],
        "currency": row["currency"],
        "customer_matches": row["customer_id"] == args["customer_id"],
        "refunded_cents": int(row["refunded_cents"]),
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


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("orders.get_order", False, get_order),
        Tool("payments.issue_refund", True, issue_refund),
        Tool("shipping.create_return_label", True, create_return_label),
        Tool("helpdesk.reply_to_customer", True, reply_to_customer),
        Tool("helpdesk.close_ticket", True, close_ticket),
    )
}
