"""The chaos run: a private stack (Tansu and embedded Postgres behind faulty proxies, every service its
own process), a ticket load, faults on a schedule, then the history checker and the report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentbus.cli import client, demo
from agentbus.cli.runtime import EmbeddedBroker, EmbeddedPostgres
from agentbus.cli.stack import EMBEDDED_BROKER_ENV, Stack
from agentbus.shared import topics
from agentbus.shared.bus import acked_producer
from agentbus.shared.db import connect
from agentbus.shared.lag import LagProbe
from agentbus.shared.serialization import dumps
from agentbus.shared.settings import Settings
from aiokafka import AIOKafkaConsumer
from chaos import faults, history
from chaos.proxy import FaultyProxy
from chaos.report import Report

TENANTS = 40
# With no reconciler: the drain ends once nothing has moved for this long (see Chaos._drain).
QUIET_S = 6.0
ORDER_BASE = 100_000  # the run's own orders (a private database): ORD-100000 …
SABOTAGE_DIR = Path(__file__).resolve().parent / "sabotage"
# Everything but the console (a dashboard: no stage of the pipeline).
SERVICES = [
    *("intake", "planner", "policy", "executor", "verifier", "escalation"),
    *("trace-sink", "reconciler"),
]


@dataclass(frozen=True)
class Config:
    tickets: int
    rate: float  # tickets published per second
    fault_every_s: float  # one fault step (single or combined) this often while the load runs
    seed: int = 7
    kinds: tuple[str, ...] = faults.KINDS
    combined_every: int = 3  # every n-th step injects two faults at once
    min_steps: int = 0  # fault steps at least (else: until the load is published, each kind once)
    targets: tuple[str, ...] = ()  # processes to kill or freeze; () = any
    # More environment for every service, e.g. the executor's own crash hook
    # (AGENTBUS_CHAOS_KILL_AFTER_CALL: SIGKILL itself right after a tool call, mid-handler).
    extra_env: tuple[tuple[str, str], ...] = ()
    reconciler: bool = True
    sabotage: str | None = None  # skip_claim | ack_first (tests/chaos/sabotage/sitecustomize.py)
    redrive_executor: bool = False  # re-drive every executor input from the audit store at the end
    drain_timeout_s: float = 240.0
    min_completed: float = 0.9  # share of tickets that must end in their expected final state
    reconcile_after_s: float = 8.0


@dataclass
class Published:
    """A ticket the broker acknowledged, and the final state it should reach."""

    ticket_id: str
    expected: str
    partition: int
    offset: int
    at: float


@dataclass
class Progress:
    """tasks.finished as it grows: the first time each ticket finished (monotonic clock)."""

    finished: dict[str, float] = field(default_factory=dict)

    def after(self, t: float) -> float | None:
        later = [v for v in self.finished.values() if v > t]
        return min(later) if later else None


class ChaosRun:
    def __init__(self, config: Config, workdir: Path, log: Callable[[str], object] = print) -> None:
        self.config = config
        self.workdir = workdir
        self.log = log
        self.rng = random.Random(config.seed)
        self.prefix = f"chaos{uuid.uuid4().hex[:6]}."
        self.broker_proxy = FaultyProxy("broker", self._broker_target)
        self.broker = EmbeddedBroker(log_path=workdir / "broker.log", advertised_port=self.broker_proxy.port)
        # Its own throw-away data directory (reachable by the wheel's server user when we are root).
        self.postgres = EmbeddedPostgres()
        self.pg_proxy = FaultyProxy("postgres", self._pg_target)
        self.direct_url = ""
        self.stack: Stack | None = None
        self.published: dict[str, Published] = {}
        self.malformed: list[history.Malformed] = []
        self.progress = Progress()
        self.injected: list[faults.Injected] = []
        self.load_done = asyncio.Event()

    def _broker_target(self) -> tuple[str, int]:
        return ("127.0.0.1", self.broker.port)

    def _pg_target(self) -> str:
        return str(self.postgres.data_dir / ".s.PGSQL.5432")

    @property
    def settings(self) -> Settings:
        assert self.stack is not None
        return self.stack.settings()

    async def start(self) -> None:
        self.broker_proxy.start()
        self.broker.start()
        self.direct_url = await asyncio.to_thread(self.postgres.start)
        self.pg_proxy.start()
        env = {
            **EMBEDDED_BROKER_ENV,
            "AGENTBUS_RECONCILE_AFTER_S": str(self.config.reconcile_after_s),
            "AGENTBUS_RECONCILE_INTERVAL_S": "2",
        }
        env.update(self.config.extra_env)
        if self.config.sabotage:
            env["PYTHONPATH"] = str(SABOTAGE_DIR)
            env["AGENTBUS_CHAOS_SABOTAGE"] = self.config.sabotage
        services = SERVICES if self.config.reconciler else [s for s in SERVICES if s != "reconciler"]
        self.stack = Stack(
            state_dir=self.workdir / "state",
            bootstrap=f"127.0.0.1:{self.broker_proxy.port}",
            database_url=f"postgresql://postgres@127.0.0.1:{self.pg_proxy.port}/postgres",
            topic_prefix=self.prefix,
            services=services,
            extra_env=env,
        )
        await self.stack.start()

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        self.broker.stop()
        self.broker_proxy.stop()
        self.pg_proxy.stop()
        self.postgres.stop()

    # The load ------------------------------------------------------------------------------------

    def _tickets(self) -> list[tuple[dict[str, Any], str]]:
        """Refunds of $5 (resolved autonomously), $80 (denied → escalated) and questions (escalated),
        7 : 1 : 2, each refund on its own order so a double refund shows in the system of record.
        Spread over TENANTS tenants: each tenant's refunds are capped at $500 a day and 60 a minute
        (policies/refunds), and a run that hit the cap would escalate by policy, not by fault."""
        out: list[tuple[dict[str, Any], str]] = []
        for n in range(self.config.tickets):
            kind, tenant = n % 10, f"chaos-{n % TENANTS}"
            if kind < 7:
                out.append((demo.refund_ticket(f"ORD-{ORDER_BASE + n}", tenant_id=tenant), "resolved"))
            elif kind == 7:
                out.append((demo.refund_ticket(f"ORD-{ORDER_BASE + n}", tenant_id=tenant), "escalated"))
            else:
                out.append(({**demo.question_ticket(), "tenant_id": tenant}, "escalated"))
        return out

    async def _load(self, tickets: list[tuple[dict[str, Any], str]]) -> None:
        producer = acked_producer(self.settings, request_timeout_ms=5000)
        await producer.start()
        topic = topics.topic_name(topics.TICKETS_RECEIVED, self.prefix)
        start = time.monotonic()
        try:
            for n, (body, expected) in enumerate(tickets):
                if (wait := start + n / self.config.rate - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                event = client.ticket_event(body)
                value = dumps(event)
                headers = [("type", b"ticket.received"), ("version", b"1")]
                # One record per request, awaited (Tansu's end offset after a batch, see pipeload);
                # a send that failed (proxy cut) is sent again, the same bytes: the same event_id.
                while True:
                    try:
                        meta = await producer.send_and_wait(
                            topic, value, key=event.ticket_id.encode(), headers=headers
                        )
                        break
                    except Exception as exc:
                        self.log(f"  publish of {event.ticket_id} failed ({type(exc).__name__}); again")
                        await asyncio.sleep(0.5)
                self.published[event.ticket_id] = Published(
                    event.ticket_id, expected, meta.partition, meta.offset, time.monotonic()
                )
        finally:
            await producer.stop()
            self.load_done.set()

    async def _watch_finished(self) -> None:
        consumer = AIOKafkaConsumer(
            topics.topic_name(topics.TASKS_FINISHED, self.prefix),
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                now = time.monotonic()
                for records in batch.values():
                    for r in records:
                        tid = r.key.decode() if r.key else ""
                        self.progress.finished.setdefault(tid, now)
        finally:
            await consumer.stop()

    # Faults ----------------------------------------------------------------------------------------

    async def _faults(self) -> None:
        assert self.stack is not None
        env = faults.Env(
            supervisor=self.stack.supervisor,  # type: ignore[arg-type]
            postgres=self.postgres,
            broker_proxy=self.broker_proxy,
            pg_proxy=self.pg_proxy,
            settings=self.settings,
            rng=self.rng,
            malformed=self.malformed,
            log=self.log,
            targets=self.config.targets,
        )
        plan = list(self.config.kinds)
        self.rng.shuffle(plan)
        step = 0
        await asyncio.sleep(self.config.fault_every_s / 2)
        # Until the load is done, and at least once through every kind.
        while not self.load_done.is_set() or step < max(len(plan), self.config.min_steps):
            step += 1
            kinds = [plan[(step - 1) % len(plan)]]
            if self.config.combined_every and step % self.config.combined_every == 0:
                kinds.append(self.rng.choice([k for k in plan if k != kinds[0]]))
            results = await asyncio.gather(*(faults.inject(k, env) for k in kinds))
            self.injected.extend(results)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.load_done.wait(), self.config.fault_every_s)

    async def _drain(self) -> None:
        """Until every published ticket finished, or the time is up, or, with no reconciler to
        re-drive a stalled ticket, nothing moves any more: every service up, no consumer lag, and
        the audit store unchanged for QUIET_S (a lost event leaves its ticket unfinished for good;
        waiting out the timeout would only prove that slowly)."""
        deadline, last_report = time.monotonic() + self.config.drain_timeout_s, 0.0
        assert self.stack is not None and self.stack.supervisor is not None
        procs = self.stack.supervisor.procs
        async with contextlib.AsyncExitStack() as opened:
            watch_quiet = not self.config.reconciler
            if watch_quiet:
                probe = LagProbe(self.settings)
                await probe.start()
                opened.push_async_callback(probe.stop)
                conn = await connect(self.direct_url)
                opened.push_async_callback(conn.close)
            stored, still_since = -1, time.monotonic()
            while time.monotonic() < deadline:
                done = sum(1 for t in self.published if t in self.progress.finished)
                if done == len(self.published):
                    return
                if time.monotonic() - last_report > 15:
                    self.log(f"  draining: {done}/{len(self.published)} finished")
                    last_report = time.monotonic()
                if watch_quiet:
                    count = await conn.fetchval("SELECT count(*) FROM audit.events")
                    lag = await probe.measure([n for n in procs if n != "trace-sink"])
                    behind = any(n is None or n > 0 for n in lag.values())  # None: not known yet
                    moving = count != stored or behind or not all(p.ready() for p in procs.values())
                    if moving:
                        stored, still_since = count, time.monotonic()
                    elif time.monotonic() - still_since > QUIET_S:
                        self.log(f"  quiet for {QUIET_S:.0f}s with {done}/{len(self.published)} finished")
                        return
                await asyncio.sleep(0.5)

    # The run ---------------------------------------------------------------------------------------

    async def run(self) -> Report:
        started = time.monotonic()
        await self.start()
        assert self.stack is not None
        self.log(f"stack up in {time.monotonic() - started:.1f}s; state in {self.workdir}")
        tickets = self._tickets()
        orders = [
            demo.Order(str(body["order_id"]), 500 if expected == "resolved" else 8000, str(body["tenant_id"]))
            for body, expected in tickets
            if "order_id" in body
        ]
        await demo.add_orders(self.direct_url, orders)
        watcher = asyncio.create_task(self._watch_finished())
        load_started = time.monotonic()
        load = asyncio.create_task(self._load(tickets))
        chaos = asyncio.create_task(self._faults())
        try:
            await load
            await chaos
            await self._drain()
            if self.config.redrive_executor:
                await self._redrive_executor()
            assert self.stack.supervisor is not None
            await asyncio.to_thread(self.stack.supervisor.wait_ready, 60)
            await history.settle(self.settings, self.direct_url, self.log)
        finally:
            watcher.cancel()
        load_s = time.monotonic() - load_started
        faults.measure_recovery(self.injected, self.progress.after)
        assert self.stack.supervisor is not None
        restarts = {p["service"]: p["restarts"] for p in self.stack.supervisor.describe() if p["restarts"]}
        self.stack.supervisor.stop()
        recorded = await history.collect(
            self.settings, self.direct_url, self.stack.state_dir, list(self.published.values())
        )
        checked = history.check(
            recorded, self.published, self.malformed, min_completed=self.config.min_completed
        )
        return Report.build(
            self.config,
            self.published,
            self.injected,
            recorded,
            checked,
            load_s,
            time.monotonic() - started,
            restarts,
        )

    async def _redrive_executor(self) -> None:
        """Every decision of the finished tickets put back on its topic for the executors, as an
        operator's replay would: each one must be answered from the ledger, never acted on again.
        Finished tickets only: a re-drive would also repair a ticket whose event was lost, and the
        checker must still see that loss."""
        from agentbus.cli.redrive import run as redrive
        from agentbus.shared.redrive import Selection

        finished = [t for t in self.published if t in self.progress.finished]
        settings = self.settings.model_copy(update={"database_url": self.direct_url})
        report = await redrive(settings, Selection(tickets=finished), "executor", False)
        self.log(f"  re-drove {report.total} events to the executors")
        self.injected.append(faults.Injected("redrive", "executor", time.monotonic(), time.monotonic()))
        # Each re-driven decision bumps its ledger row's attempts: wait until they stop moving.
        conn = await connect(self.direct_url)
        try:
            last, since, deadline = -1, time.monotonic(), time.monotonic() + 180
            while time.monotonic() < deadline and time.monotonic() - since < 3:
                n = await conn.fetchval("SELECT coalesce(sum(attempts), 0) FROM executor.effects")
                if n != last:
                    last, since = n, time.monotonic()
                await asyncio.sleep(0.5)
        finally:
            await conn.close()


async def run_and_report(config: Config, workdir: Path) -> Report:
    """One run: printed, written to `workdir`/report.json and to AGENTBUS_CHAOS_REPORT when set."""
    run = ChaosRun(config, workdir)
    try:
        report = await run.run()
    finally:
        run.stop()
    print("\n" + report.render())
    report.write(workdir / "report.json")
    if target := os.environ.get("AGENTBUS_CHAOS_REPORT"):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        report.write(Path(target))
    return report
