"""Running a suite through the real pipeline: a fresh embedded stack (with the scripted model server
for model suites), the run's data seeded, every ticket published as upstream would, then what the
audit store and the systems of record hold, scored."""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from agentbus.shared.db import connect
from agentbus.shared.events import Event
from agentbus.shared.serialization import dumps
from agentbus.shared.status import SETTLED, ticket_status
from agentbus.trace_sink.store import ticket_events

from .. import client
from ..model_server import ScriptedModelServer
from ..stack import Stack, repo_root, throwaway_stack
from . import scoring
from .plan import PlannedTask, plan
from .suite import Suite

MODELS_TOML = """
[endpoints.eval]
base_url = "{base_url}"
timeout_s = 10
max_retries = 1

[prices.eval-small]
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60

[prices.eval-large]
input_usd_per_mtok = 2.50
output_usd_per_mtok = 10.00

[intake]
endpoint = "eval"
model = "eval-small"

[workflows.refunds]
endpoint = "eval"
plan_model = "eval-large"
draft_model = "eval-small"
max_reasks = 2

[workflows.it_access]
endpoint = "eval"
plan_model = "eval-large"
draft_model = "eval-small"
max_reasks = 2
"""


@dataclass
class SuiteRun:
    suite: str
    figures: scoring.SuiteFigures
    results: list[scoring.TaskResult]
    seconds: float


def refund_thresholds() -> scoring.Thresholds:
    bundle = tomllib.loads((repo_root() / "policies" / "refunds" / "bundle.toml").read_text())
    t = bundle["thresholds"]
    return scoring.Thresholds(t["autonomous_max_cents"], t["approval_max_cents"])


async def run_suite(
    suite: Suite,
    *,
    timeout: float = 120.0,
    progress: Callable[[str], Any] = lambda _: None,
) -> SuiteRun:
    """Start a stack for the suite (DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set), run it, stop it."""
    server = ScriptedModelServer(script).start() if (script := suite.script_path()) is not None else None
    try:
        with throwaway_stack("eval") as stack:
            if server is not None:
                models = stack.state_dir.parent / "models.toml"
                models.write_text(MODELS_TOML.format(base_url=server.base_url))
                stack.extra_env["AGENTBUS_MODELS_FILE"] = str(models)
            progress(f"{suite.name}: starting the stack ({suite.suite.planner} planner)")
            await stack.start()
            return await run_on(stack, suite, server, timeout=timeout, progress=progress)
    finally:
        if server is not None:
            server.stop()


async def run_on(
    stack: Stack,
    suite: Suite,
    server: ScriptedModelServer | None,
    *,
    timeout: float,
    progress: Callable[[str], Any],
) -> SuiteRun:
    settings = stack.settings()
    assert settings.database_url
    # 10 digits, a multiple of 10^5: ids of the run are this plus at most 100 per task.
    run = random.randrange(10**9, 9 * 10**9, 10**5)
    planned = plan(suite, run)
    await seed(settings.database_url, planned)
    started = time.monotonic()
    start = datetime.now(UTC) - timedelta(seconds=1)
    done = 0

    async def run_task(task: PlannedTask) -> None:
        nonlocal done
        # A task's tickets go one after the other, each once the previous one has settled: later
        # tickets test what earlier ones left behind (a split refund, a spent budget).
        for ticket in task.tickets:
            if ticket.raw is not None:
                await publisher.publish([(ticket.ticket_id, ticket.raw)])
            else:
                assert ticket.ticket is not None
                await publisher.publish(wire(ticket.ticket))
            await watch.settled(ticket.ticket_id, timeout)
        done += 1
        if done == len(planned) or done * 4 // len(planned) > (done - 1) * 4 // len(planned):
            progress(f"{suite.name}: {done}/{len(planned)} tasks settled")

    async with client.Publisher(settings) as publisher, StatusWatch(settings.database_url) as watch:
        await asyncio.gather(*(run_task(t) for t in planned))
    # Trace sink writes asynchronously: let the last events land before reading the audit store.
    await asyncio.sleep(1.0)
    observations = await observe(settings.database_url, planned)
    end = datetime.now(UTC) + timedelta(seconds=1)
    adversarial = suite.suite.kind == "adversarial"
    requests = server.requests if server is not None else []
    limits = refund_thresholds()
    results = [
        scoring.score_task(
            p, observations[p.task.id], limits, adversarial=adversarial, model_requests=requests
        )
        for p in planned
    ]
    events = [e for o in observations.values() for t in o.tickets.values() for e in t.events]
    figures = scoring.figures(suite.name, results, events, start, end, adversarial=adversarial)
    return SuiteRun(suite.name, figures, results, time.monotonic() - started)


class StatusWatch:
    """Every waiting ticket's status from the audit store, in one query a poll: a task per ticket
    polling on its own would load the database more than the run under test."""

    def __init__(self, dsn: str, interval: float = 0.2) -> None:
        self.dsn = dsn
        self.interval = interval
        self.waiting: dict[str, tuple[float, asyncio.Future[str]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusWatch:
        self.conn = await connect(self.dsn)
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        await self.conn.close()

    async def settled(self, ticket_id: str, timeout: float) -> str:
        """The ticket's status once it settles, or whatever it is when the timeout passes."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting[ticket_id] = (time.monotonic() + timeout, future)
        return await future

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.waiting:
                continue
            rows = await self.conn.fetch(
                """SELECT ticket_id, event FROM audit.events
                   WHERE ticket_id = ANY($1) AND event IS NOT NULL
                   ORDER BY ticket_id, (event->>'step')::int, occurred_at, seq""",
                list(self.waiting),
            )
            events: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                events.setdefault(row["ticket_id"], []).append(row["event"])
            now = time.monotonic()
            for ticket_id, (deadline, future) in list(self.waiting.items()):
                status = ticket_status(events.get(ticket_id, []))
                if status in SETTLED or now > deadline:
                    del self.waiting[ticket_id]
                    future.set_result(status)


def wire(ticket: dict[str, Any]) -> list[Event] | list[tuple[str, bytes]]:
    """What to publish for a ticket: its event, or, for a ticket the schema refuses (an oversized
    body), the same event as raw bytes, as a broken upstream would send it."""
    try:
        event: Event = client.ticket_event(ticket)
        return [event]
    except client.BadTicket:
        data = orjson.loads(dumps(client.ticket_event({**ticket, "body": ""})))
        data["payload"]["body"] = ticket["body"]
        return [(ticket["ticket_id"], orjson.dumps(data))]


async def seed(dsn: str, planned: list[PlannedTask]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                """INSERT INTO sor.customers (id, tenant_id, email, name)
                   VALUES ('C-2', 'acme', 'robin@example.com', 'Robin Other') ON CONFLICT (id) DO NOTHING"""
            )
            await conn.executemany(
                """INSERT INTO sor.orders
                       (id, tenant_id, customer_id, amount_cents, currency, status, item_title)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)""",
                [o for p in planned for o in p.orders],
            )
            await conn.executemany(
                """INSERT INTO sor.directory_users (id, tenant_id, email, name, status)
                   VALUES ($1, $2, $3, 'Eval User', $4)""",
                [u for p in planned for u in p.users],
            )
            await conn.executemany(
                "INSERT INTO sor.directory_groups (id, tenant_id, name, admin) VALUES ($1, $2, $3, $4)",
                [g for p in planned for g in p.groups],
            )
    finally:
        await conn.close()


async def observe(dsn: str, planned: list[PlannedTask]) -> dict[str, scoring.TaskObservation]:
    conn = await connect(dsn)
    try:
        out = {}
        for p in planned:
            seen = scoring.TaskObservation()
            for t in p.tickets:
                events = await ticket_events(conn, t.ticket_id)
                status = ticket_status(events)
                seen.tickets[t.ticket_id] = scoring.TicketObservation(t.ticket_id, status, events)
            orders = [o[0] for o in p.orders]
            for r in await conn.fetch(
                "SELECT order_id, sum(amount_cents)::int AS cents FROM sor.refunds WHERE order_id = ANY($1)"
                " GROUP BY order_id",
                orders,
            ):
                seen.refunds[r["order_id"]] = r["cents"]
            seen.labels = {
                r["order_id"]
                for r in await conn.fetch(
                    "SELECT order_id FROM sor.return_labels WHERE order_id = ANY($1)", orders
                )
            }
            users = [u[0] for u in p.users]
            seen.grants = {
                (r["user_id"], r["group_id"])
                for r in await conn.fetch(
                    "SELECT user_id, group_id FROM sor.group_memberships WHERE user_id = ANY($1)", users
                )
            }
            seen.resets = {
                r["user_id"]
                for r in await conn.fetch(
                    "SELECT user_id FROM sor.password_reset_links WHERE user_id = ANY($1)", users
                )
            }
            ticket_ids = p.ticket_ids + [p.ids[v] for v in p.task.victims]
            for r in await conn.fetch(
                "SELECT ticket_id, body FROM sor.ticket_replies WHERE ticket_id = ANY($1)", ticket_ids
            ):
                seen.replies.setdefault(r["ticket_id"], []).append(r["body"])
            seen.closed = {
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM sor.tickets WHERE id = ANY($1) AND status = 'closed'", ticket_ids
                )
            }
            out[p.task.id] = seen
        return out
    finally:
        await conn.close()
