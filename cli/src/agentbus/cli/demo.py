"""Demo systems of record (seed data) and the demo ticket set."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

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
INSERT INTO sor.directory_users (id, tenant_id, email, name, manager_id, status) VALUES
    ('U-101', 'acme', 'sam@example.com', 'Sam Manager', NULL, 'active'),
    ('U-100', 'acme', 'dana@example.com', 'Dana Demo', 'U-101', 'active'),
    ('U-102', 'acme', 'lee@example.com', 'Lee Leaver', 'U-101', 'disabled')
ON CONFLICT (id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, email = EXCLUDED.email,
    name = EXCLUDED.name, manager_id = EXCLUDED.manager_id, status = EXCLUDED.status;
INSERT INTO sor.directory_groups (id, tenant_id, name, admin) VALUES
    ('grp-analytics', 'acme', 'Analytics', false),
    ('grp-wiki', 'acme', 'Wiki editors', false),
    ('grp-prod-admin', 'acme', 'Production administrators', true)
ON CONFLICT (id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, name = EXCLUDED.name, admin = EXCLUDED.admin;
"""

RESET_SQL = """
DELETE FROM sor.refunds WHERE order_id IN ('ORD-1001', 'ORD-1002', 'ORD-1003', 'ORD-1004');
DELETE FROM sor.return_labels WHERE order_id IN ('ORD-1001', 'ORD-1002', 'ORD-1003', 'ORD-1004');
DELETE FROM sor.group_memberships WHERE user_id IN ('U-100', 'U-101', 'U-102');
DELETE FROM sor.password_reset_links WHERE user_id IN ('U-100', 'U-101', 'U-102');
"""


async def seed(dsn: str, *, reset: bool = False) -> None:
    """Create the demo customer, orders, directory users and groups; with reset, also undo earlier
    demo refunds, labels, group grants and password resets."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            if reset:
                await conn.execute(RESET_SQL)
            await conn.execute(SEED_SQL)
    finally:
        await conn.close()


class Order(NamedTuple):
    """An order of the demo customer (C-1) in the systems of record."""

    id: str
    amount_cents: int
    tenant_id: str = TENANT
    status: str = "delivered"


async def add_orders(dsn: str, orders: Iterable[Order]) -> None:
    """Add orders beyond the demo's own (load tests, benchmarks); each id must be new."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            """INSERT INTO sor.orders (id, tenant_id, customer_id, amount_cents, currency, status)
               VALUES ($1, $3, 'C-1', $2, 'USD', $4)""",
            list(orders),
        )
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


def it_access_ticket(
    subject: str, body: str, user_id: str = "U-100", ticket_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An IT access request from a directory user. The helpdesk puts the requester's directory id
    in `metadata.user_id`: intake trusts only that, never an id written in the text."""
    return {
        "ticket_id": ticket_id or f"T-{uuid.uuid4().hex[:8].upper()}",
        "tenant_id": TENANT,
        "channel": "web",
        "customer": {"id": user_id, "email": "dana@example.com"},
        "subject": subject,
        "body": body,
        "metadata": {"source": "demo", "user_id": user_id},
        **extra,
    }


def it_access_tickets() -> list[tuple[str, dict[str, Any] | bytes, str]]:
    """The IT access demo tickets, (label, ticket, expected status) like `demo_set()`. The expected
    statuses need the it_access policy bundle (policies/it_access/: a reset is allowed, an admin
    group grant needs approval); without it policy denies every it_access action and both escalate."""
    return [
        (
            "U-100 password reset",
            it_access_ticket("Locked out", "Hi, I forgot my password and I am locked out. Please reset it."),
            "resolved",
        ),
        (
            "U-100 grp-prod-admin",
            it_access_ticket("Access request", "Please add me to grp-prod-admin, I am on call this week."),
            "awaiting_approval",
        ),
    ]


# (label, expected status) for each demo ticket, in submission order.
def demo_set() -> list[tuple[str, dict[str, Any] | bytes, str]]:
    return [
        ("ORD-1001 $20 refund", refund_ticket("ORD-1001"), "resolved"),
        ("ORD-1002 $40 refund", refund_ticket("ORD-1002"), "awaiting_approval"),
        ("ORD-1003 $80 refund", refund_ticket("ORD-1003"), "escalated"),
        ("ORD-1004 in transit", refund_ticket("ORD-1004"), "escalated"),
        ("non-refund question", question_ticket(), "escalated"),
        *it_access_tickets(),
        (
            "malformed event",
            b'{"type": "ticket.received", "version": 1, "payload": "oops"',
            "dead_lettered",
        ),
    ]
