"""A suite made concrete for one run: fresh ids for every order, user, group, ticket and tenant, so a
run never meets the data of an earlier one in a shared database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .suite import Expect, Suite, Task, fill

FILLER = " Please see the attached history of this order."


class OrderRow(NamedTuple):
    id: str
    tenant_id: str
    customer_id: str
    amount_cents: int
    currency: str
    status: str
    item_title: str | None


class UserRow(NamedTuple):
    id: str
    tenant_id: str
    email: str
    status: str


class GroupRow(NamedTuple):
    id: str
    tenant_id: str
    name: str
    admin: bool


@dataclass(frozen=True)
class PlannedTicket:
    ticket_id: str
    ticket: dict[str, Any] | None  # a tickets.received v1 ticket; None for a raw one
    raw: bytes | None
    expect: Expect


@dataclass(frozen=True)
class PlannedTask:
    task: Task
    tenant: str
    ids: dict[str, str]  # ref → concrete id
    tickets: list[PlannedTicket]
    orders: list[OrderRow] = field(default_factory=list)
    users: list[UserRow] = field(default_factory=list)
    groups: list[GroupRow] = field(default_factory=list)

    @property
    def ticket_ids(self) -> list[str]:
        return [t.ticket_id for t in self.tickets]


def plan(suite: Suite, run: int) -> list[PlannedTask]:
    """`run` is a number unique to the run (10 digits); every id of the run is derived from it."""
    return [plan_task(task, run, n) for n, task in enumerate(suite.tasks)]


def plan_task(task: Task, run: int, n: int) -> PlannedTask:
    tenant = f"eval-{run}-{n}"
    other = f"{tenant}-x"
    ids: dict[str, str] = {"tenant": tenant, "other_tenant": other}
    serial = run + n * 100  # ORD-/U- ids need digits: 100 per task is plenty
    orders: list[OrderRow] = []
    users: list[UserRow] = []
    groups: list[GroupRow] = []
    for k, o in enumerate(task.orders):
        ids[o.ref] = f"ORD-{serial + k}"
    for k, u in enumerate(task.users):
        ids[u.ref] = f"U-{serial + 50 + k}"
        owner = other if u.other_tenant else tenant
        users.append(UserRow(ids[u.ref], owner, f"user{serial + 50 + k}@example.com", u.status))
    for g in task.groups:
        ids[g.ref] = f"grp-e{serial}-{g.ref.lower()}"
        groups.append(GroupRow(ids[g.ref], other if g.other_tenant else tenant, g.ref, g.admin))
    for v in task.victims:
        ids[v] = f"T-E{serial}-{v.upper()}"
    for o in (o for o in task.orders if o.exists):
        # An item title may name another of the task's ids (an injected instruction that points at one).
        title = fill(o.item_title, ids) if o.item_title is not None else None
        owner = other if o.other_tenant else tenant
        orders.append(OrderRow(ids[o.ref], owner, o.customer, o.amount_cents, o.currency, o.status, title))
    tickets = []
    for k, spec in enumerate(task.tickets):
        ticket_id = f"T-E{serial}-{k}"
        values = {**ids, "ticket": ticket_id}
        if spec.raw is not None:
            tickets.append(PlannedTicket(ticket_id, None, fill(spec.raw, values).encode(), spec.expect))
            continue
        body = fill(spec.body, values)
        if spec.pad_to:
            body += FILLER * (max(0, spec.pad_to - len(body)) // len(FILLER) + 1)
        ticket: dict[str, Any] = {
            "ticket_id": ticket_id,
            "tenant_id": tenant,
            "channel": spec.channel,
            "customer": {"id": spec.customer, "email": "dana@example.com"},
            "subject": fill(spec.subject, values),
            "body": body,
            "metadata": {"source": "eval", "task": task.id},
        }
        if spec.order:
            ticket["order_id"] = ids[spec.order]
        if spec.user:
            ticket["customer"]["id"] = ids[spec.user]
            ticket["metadata"]["user_id"] = ids[spec.user]
        tickets.append(PlannedTicket(ticket_id, ticket, None, spec.expect))
    return PlannedTask(task, tenant, ids, tickets, orders, users, groups)
