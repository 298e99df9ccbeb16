"""Kill-switch benchmark: engage a switch on the executor's input topic mid-run, measure the time
from the switch to the last execution, resume, and check every ticket completes exactly once."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentbus.shared import topics
from agentbus.shared.db import connect
from agentbus.shared.events import ActionExecutedV1, DecodeError, decode
from agentbus.shared.kafka_clients import client_security_kwargs
from agentbus.shared.settings import Settings
from aiokafka import AIOKafkaConsumer

from . import client, demo
from .switches import switch_event

HALT_TARGET_MS = 200.0  # DESIGN §8
# The refunds bundle allows 60 refunds a minute and $500 a day per tenant; 10 $10 refunds stay far
# inside both.
TICKETS_PER_TENANT = 10


@dataclass
class KillSwitchReport:
    tickets: int
    executions_before_switch: int
    executions_after_switch: int  # already in flight when the switch landed
    halt_ms: float  # switch acknowledged → last execution before the pause (0 when none came after)
    quiet_before_ms: float  # last execution before the switch → the switch (the gap it landed in)
    held_s: float
    executions_while_held: int  # after the halt window; must be 0
    resume_to_done_s: float
    statuses: dict[str, int]
    refunds: int
    orders_refunded_twice: int
    orders_never_refunded: int
    executions: int  # non-duplicate successful executions seen on the topic
    duplicate_executions: int  # redeliveries answered from the effect ledger (no new effect)
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.executions_while_held == 0
            and self.statuses == {"resolved": self.tickets}
            and self.refunds == self.tickets
            and self.orders_refunded_twice == 0
            and self.orders_never_refunded == 0
        )

    def render(self) -> list[str]:
        verdict = "meets" if self.halt_ms < HALT_TARGET_MS else "MISSES"
        return [
            f"tickets                      {self.tickets}",
            f"executions before the switch {self.executions_before_switch}",
            f"in flight after the switch   {self.executions_after_switch}",
            f"switch → last execution      {self.halt_ms:.1f} ms  "
            f"(target < {HALT_TARGET_MS:.0f} ms: {verdict})"
            + (
                ""
                if self.executions_after_switch
                else f"; none after it, the last {self.quiet_before_ms:.1f} ms before"
            ),
            f"held for                     {self.held_s:.1f} s, executions meanwhile: "
            f"{self.executions_while_held}",
            f"resume → all complete        {self.resume_to_done_s:.1f} s",
            f"outcomes                     {self.statuses}",
            f"refunds                      {self.refunds} (twice: {self.orders_refunded_twice}, "
            f"missing: {self.orders_never_refunded}); ledger answered {self.duplicate_executions} "
            "redeliveries",
            "result                       " + ("OK" if self.ok else "FAILED"),
        ]


class ExecutionWatch:
    """Follows actions.executed and timestamps each execution as the executor recorded it."""

    def __init__(self, settings: Settings, ticket_ids: set[str]) -> None:
        self.ticket_ids = ticket_ids
        self.executed: list[tuple[float, ActionExecutedV1]] = []
        self.consumer = AIOKafkaConsumer(
            topics.topic_name(topics.ACTIONS_EXECUTED, settings.topic_prefix),
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="latest",
            fetch_max_wait_ms=5,
            **client_security_kwargs(settings),
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        # Position at the end now, so the run's executions are all seen and nothing earlier is.
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()

    async def _follow(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for record in records:
                    try:
                        event = decode(record.value)
                    except DecodeError:
                        continue
                    if isinstance(event, ActionExecutedV1) and event.ticket_id in self.ticket_ids:
                        self.executed.append((event.occurred_at.timestamp(), event))

    def effects(self, since: float = 0.0) -> list[float]:
        """When each new effect happened (a duplicate answered from the ledger is not one)."""
        return [
            at
            for at, e in self.executed
            if at >= since and e.payload.status == "succeeded" and not e.payload.duplicate
        ]


async def refund_counts(database_url: str, orders: list[str]) -> dict[str, int]:
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT order_id, count(*) AS n FROM sor.refunds WHERE order_id = ANY($1) GROUP BY order_id",
            orders,
        )
        return {r["order_id"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def run(
    settings: Settings,
    *,
    tickets: int = 500,
    kill_at: float = 0.3,
    hold_s: float = 3.0,
    timeout: float = 600.0,
    progress: Callable[[str], Any] = lambda _: None,
) -> KillSwitchReport:
    """Refund tickets through the running stack; after `kill_at` of the executions, kill
    actions.decided, hold it for `hold_s`, release it, and wait for every ticket."""
    assert settings.database_url
    run_id = uuid.uuid4().hex[:6].upper()
    # Order ids must match the tools' argument schema (ORD-<3 to 10 digits>): a random 10-digit block.
    base = random.randrange(10**9, 9 * 10**9, 10**5)
    orders = [f"ORD-{base + n}" for n in range(tickets)]
    # Spread over tenants so that no tenant's refund budget or rate limit turns the run into
    # escalations: the benchmark is about the switch, not the quotas.
    tenants = [f"bench-{n % max(1, tickets // TICKETS_PER_TENANT)}" for n in range(tickets)]
    await demo.add_orders(
        settings.database_url, (demo.Order(o, 1000, t) for o, t in zip(orders, tenants, strict=True))
    )
    events = [
        client.ticket_event(
            demo.refund_ticket(o, ticket_id=f"T-K{run_id}-{n:04d}") | {"tenant_id": tenants[n]}
        )
        for n, o in enumerate(orders)
    ]
    ids = {e.ticket_id or "" for e in events}
    watch = ExecutionWatch(settings, ids)
    await watch.start()
    target = topics.ACTIONS_DECIDED.name
    try:
        await client.publish(settings, events)
        progress(f"published {tickets} tickets")
        deadline = time.monotonic() + timeout
        while len(watch.effects()) < kill_at * tickets:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(watch.effects())} executions after {timeout:.0f}s")
            await asyncio.sleep(0.005)
        before = len(watch.effects())
        await client.publish(
            settings, [switch_event("topic", target, engaged=True, reason="bench", actor="bench:kill-switch")]
        )
        switched = time.time()
        progress(f"killed {target} after {before} executions")
        await asyncio.sleep(hold_s)
        after = watch.effects(since=switched)
        halt_ms = (max(after) - switched) * 1000 if after else 0.0
        quiet_before_ms = (
            switched - max((t for t in watch.effects() if t < switched), default=switched)
        ) * 1000
        # Anything in the second half of the hold is not in-flight work finishing: the halt failed.
        while_held = len(watch.effects(since=switched + hold_s / 2))
        await client.publish(
            settings,
            [switch_event("topic", target, engaged=False, reason="bench", actor="bench:kill-switch")],
        )
        resumed = time.monotonic()
        progress("resumed; waiting for every ticket")
        statuses = await client.wait_for(
            settings.database_url, sorted(ids), timeout=timeout, until=frozenset({"resolved", "escalated"})
        )
        done_s = time.monotonic() - resumed
        counts = await refund_counts(settings.database_url, orders)
        summary: dict[str, int] = {}
        for status in statuses.values():
            summary[status] = summary.get(status, 0) + 1
        executed = [e for _, e in watch.executed if e.payload.status == "succeeded"]
        return KillSwitchReport(
            tickets=tickets,
            executions_before_switch=before,
            executions_after_switch=len(after),
            halt_ms=halt_ms,
            quiet_before_ms=quiet_before_ms,
            held_s=hold_s,
            executions_while_held=while_held,
            resume_to_done_s=done_s,
            statuses=summary,
            refunds=sum(counts.values()),
            orders_refunded_twice=sum(1 for n in counts.values() if n > 1),
            orders_never_refunded=sum(1 for o in orders if o not in counts),
            executions=sum(1 for e in executed if not e.payload.duplicate),
            duplicate_executions=sum(1 for e in executed if e.payload.duplicate),
        )
    finally:
        await watch.stop()
