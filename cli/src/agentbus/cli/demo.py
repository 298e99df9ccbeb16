"""Demo systems of record (seed data) and the demo ticket set."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

TENANT = "acme"

SEED_SQL = """
INSERT INTO sor.customers (id, tenant_id, email, name)
VALUES ('C-1', 'acme', 'dana@example.com', 'Dana Demo')
ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name;
INSERT INTO sor.orders (id, tenant_id, customer_id, amount_cents, currency, status) VALUES
    ('ORD-1001', 'acme', 'C-1', 2000, 'USD', 'delivered'),
    ('ORD-1002', 'acme', 'C-1', 4000, 'USD', 'delivered'),
    ('ORD-1003', 'acme', 'C-1', 8000, 'USD', 'delivered'),
    ('ORD-1004', 'acme', 'C-1', 1500, 'USD', 'in_transit')
ON CONFLICT (id) DO UPDATE SET amount_cents = EXCLUDED.amount_cents, status = EXCLUDED.status;
"""

RESET_SQL = """
DELETE FROM sor.refunds WHERE order_id IN ('ORD-1001', 'ORD-1002', 'ORD-1003', 'ORD-1004');
DELETE FROM sor.return_labels WHERE order_id IN ('ORD-1001', 'ORD-1002', 'ORD-1003', 'ORD-1004');
"""


async def seed(dsn: str, *, reset: bool = False) -> None:
    """Create the demo customer and orders; with reset, also undo earlier demo refunds/labels."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            if reset:
                await conn.execute(RESET_SQL)
            await conn.execute(SEED_SQL)
    finally:
        await conn.close()


def refund_ticket(order_id: str, ticket_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "ticket_id": ticket_id or f"T-{uuid.uuid4().hex[:8].upper()}",
        "tenant_id": TENANT,
        "channel": "email",
        "customer": {"id": "C-1", "email": "dana@example.com"},
        "subject": f"Refund for {order_id}",
        "body": f"Hello, the item in order {order_id} is not what I wanted. Please refund me.",
        "order_id": order_id,
        "metadata": {"source": "demo"},
        **extra,
    }


def question_ticket() -> dict[str, Any]:
    return {
        "ticket_id": f"T-{uuid.uuid4().hex[:8].upper()}",
        "tenant_id": TENANT,
        "channel": "chat",
        "customer": {"id": "C-1", "email": "dana@example.com"},
        "subject": "Opening hours",
        "body": "Hi, what are your support hours on weekends?",
        "metadata": {"source": "demo"},
    }


# (label, expected status) for each demo ticket, in submission order.
def demo_set() -> list[tuple[str, dict[str, Any] | bytes, str]]:
    return [
        ("ORD-1001 $20 refund", refund_ticket("ORD-1001"), "resolved"),
        ("ORD-1002 $40 refund", refund_ticket("ORD-1002"), "awaiting_approval"),
        ("ORD-1003 $80 refund", refund_ticket("ORD-1003"), "escalated"),
        ("ORD-1004 in transit", refund_ticket("ORD-1004"), "escalated"),
        ("non-refund question", question_ticket(), "escalated"),
        (
            "malformed event",
            b'{"type": "ticket.received", "version": 1, "payload": "oops"',
            "dead_lettered",
        ),
    ]
