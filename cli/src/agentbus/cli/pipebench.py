"""`agentbus bench`: tickets of both workflows through the running pipeline at full speed and at a
fixed offered rate, then a bare relay of as many hops on the same broker under the same load; the
figures of DESIGN §8 (pipereport.BenchReport) from event timestamps, the audit store and /proc."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol

import orjson
from agentbus.shared import topics
from agentbus.shared.db import connect
from agentbus.shared.events import TaskFinishedV2, TaskOutcome
from agentbus.shared.lag import LagProbe
from agentbus.shared.serialization import dumps
from agentbus.shared.settings import Settings

from . import client, demo, pipepath, pipeprocs
from .pipeload import Message, PhaseRun, Send, drive, publish
from .pipereport import BenchReport, Handler, Latency, Process, Side, Sink, Stage
from .relay import Relay
from .stack import Stack

# The refunds bundle allows 60 refunds a minute and $500 a day per tenant, the IT access bundle 10
# password resets a minute: 5 tickets a tenant keep every ticket inside its quotas, whatever the mix.
# The benchmark measures the pipeline, not the quotas.
TICKETS_PER_TENANT = 5
REFUND_CENTS = 1000
RESET_SUBJECT = "Locked out"
RESET_BODY = "Hi, I forgot my password and I am locked out. Please reset it."
BROKER, POSTGRES = "broker (tansu)", "postgres"
INFRASTRUCTURE = frozenset({BROKER, POSTGRES})  # measured, but not service processes
NONE = Latency.of([])
IDLE_S = 5.0  # how long each side is measured with no load (what polling alone costs)


class Progress(Protocol):
    """Where the bench reports how far it is (a progress bar in the CLI)."""

    def phase(self, description: str, total: int) -> Callable[[int], object]: ...

    def note(self, message: str) -> None: ...


@dataclass(frozen=True)
class Config:
    tickets: int = 200
    rate: float | None = None  # offered tickets/s of the fixed-rate phase; None = half the pipeline's max
    it_share: float = 0.5  # share of IT access tickets (the rest are refunds)
    warmup: int = 20  # tickets through each side before it is measured
    sink_events: int = 20_000  # backlog the trace sink drains for its events/s
    timeout: float = 600.0  # per phase


def stack_env(config: Config) -> dict[str, str]:
    """What the bench adds to the services' environment. Each service's Prometheus endpoint (numbered
    up from one free base) gives the bench the stages' handler times. The reconciler re-drives a
    ticket only after a phase's timeout: a max-rate burst queues tickets for minutes, which is no
    stall, and a re-drive would add work the relay does not have."""
    env = {"AGENTBUS_RECONCILE_AFTER_S": f"{config.timeout:g}"}
    if not os.environ.get("AGENTBUS_METRICS_PORT"):
        env["AGENTBUS_METRICS_PORT"] = str(pipeprocs.free_port_block(32))
    return env


@dataclass(frozen=True)
class BenchTicket:
    ticket_id: str
    relay_id: str  # its twin on the relay: the same ticket under an id of the same length
    workflow: str  # refunds | it_access
    tenant_id: str
    subject_id: str  # the order (refunds) or directory user (IT access)


def plan(
    run_id: str, phase: str, count: int, it_share: float, order_base: int, user_base: int
) -> list[BenchTicket]:
    """`count` tickets, IT access spread evenly among refunds by `it_share`, ten to a tenant, one
    directory user per tenant; orders and users numbered from the bases (see seed)."""
    tickets = []
    for n in range(count):
        it = int((n + 1) * it_share) > int(n * it_share)
        group = n // TICKETS_PER_TENANT
        tickets.append(
            BenchTicket(
                ticket_id=f"T-B{run_id}-{phase}{n:05d}",
                relay_id=f"T-B{run_id}-{phase.lower()}{n:05d}",
                workflow="it_access" if it else "refunds",
                tenant_id=f"bench-{run_id}-{phase}{group}",
                subject_id=f"U-{user_base + group}" if it else f"ORD-{order_base + n}",
            )
        )
    return tickets


def ticket_data(ticket: BenchTicket, ticket_id: str | None = None) -> dict[str, Any]:
    tid = ticket_id or ticket.ticket_id
    if ticket.workflow == "it_access":
        data = demo.it_access_ticket(RESET_SUBJECT, RESET_BODY, user_id=ticket.subject_id, ticket_id=tid)
    else:
        data = demo.refund_ticket(ticket.subject_id, ticket_id=tid)
    return data | {"tenant_id": ticket.tenant_id}


def ticket_message(topic: str, ticket: BenchTicket, key: str | None = None) -> Message:
    """The ticket as intake receives it (as `agentbus submit` sends it), to `topic` under `key`."""
    event = client.ticket_event(ticket_data(ticket, key))
    headers = (("type", event.type.encode()), ("version", str(event.version).encode()))
    return Message(topic, key or ticket.ticket_id, dumps(event), headers)


async def seed(database_url: str, tickets: Iterable[BenchTicket]) -> None:
    """The systems-of-record rows the tickets need: a delivered order per refund, an active
    directory user per IT access tenant."""
    tickets = list(tickets)
    await demo.add_orders(
        database_url,
        (demo.Order(t.subject_id, REFUND_CENTS, t.tenant_id) for t in tickets if t.workflow == "refunds"),
    )
    users = {(t.subject_id, t.tenant_id) for t in tickets if t.workflow == "it_access"}
    conn = await connect(database_url)
    try:
        await conn.executemany(
            """INSERT INTO sor.directory_users (id, tenant_id, email, name, manager_id, status)
               VALUES ($1, $2, 'bench@example.com', 'Bench User', NULL, 'active')""",
            sorted(users),
        )
    finally:
        await conn.close()


def process_groups(stack: Stack) -> list[pipeprocs.Group]:
    """Every process of the stack: each service, the embedded broker, embedded Postgres (with its
    backends)."""
    assert stack.supervisor is not None
    groups = [
        pipeprocs.Group(sp.name, sp.proc.pid) for sp in stack.supervisor.procs.values() if sp.proc is not None
    ]
    if stack.broker is not None and stack.broker.proc is not None:
        groups.append(pipeprocs.Group(BROKER, stack.broker.proc.pid))
    if stack.postgres is not None:
        pid_file = stack.postgres.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            groups.append(pipeprocs.Group(POSTGRES, pid, with_children=True))
    return groups


def metrics_ports(stack: Stack) -> dict[str, int]:
    """Each service's Prometheus port (the stack numbers them from AGENTBUS_METRICS_PORT)."""
    assert stack.supervisor is not None
    return {
        sp.name: int(port)
        for sp in stack.supervisor.procs.values()
        if (port := sp.env.get("AGENTBUS_METRICS_PORT"))
    }


class Meter:
    """Over one phase: CPU seconds per process group, the machine's busy share, and each service's
    handler seconds and events per consumed topic (from its metrics endpoint)."""

    def __init__(self, groups: list[pipeprocs.Group], ports: dict[str, int]) -> None:
        self.groups = groups
        self.ports = ports
        self.used: dict[str, float] = {}
        self.handlers: dict[tuple[str, str], tuple[float, float]] = {}  # (seconds, events)
        self.busy = self.own = self.wall = 0.0

    async def start(self) -> None:
        self._handlers = await pipeprocs.scrape_handlers(self.ports)
        self._cpu = pipeprocs.cpu_times(self.groups)
        self._machine = pipeprocs.machine_busy()
        self._started = time.monotonic()

    async def stop(self) -> None:
        self.wall = time.monotonic() - self._started
        self.used = pipeprocs.cpu_used(self._cpu, pipeprocs.cpu_times(self.groups))
        busy, total = pipeprocs.machine_busy()
        if (elapsed := total - self._machine[1]) > 0:
            self.busy = (busy - self._machine[0]) / elapsed
            self.own = sum(self.used.values()) / elapsed
        for key, (seconds, events) in (await pipeprocs.scrape_handlers(self.ports)).items():
            s0, e0 = self._handlers.get(key, (0.0, 0.0))
            if events > e0:
                self.handlers[key] = (seconds - s0, events - e0)


async def measured(
    groups: list[pipeprocs.Group], ports: dict[str, int], phase: Awaitable[PhaseRun]
) -> tuple[PhaseRun, Meter]:
    meter = Meter(groups, ports)
    await meter.start()
    run = await phase
    await meter.stop()
    return run, meter


@dataclass
class Measured:
    max_run: PhaseRun
    max_meter: Meter
    fixed_run: PhaseRun
    fixed_meter: Meter
    rss: dict[str, float | None]
    idle: Meter | None = None  # the same processes with no load


def side(tickets: int, measured: Measured, rate: float) -> Side:
    max_run, fixed_run = measured.max_run, measured.fixed_run
    return Side(
        tickets=tickets,
        completed_max=len(max_run.ended),
        throughput=max_run.throughput,
        max_rate=Latency.of(max_run.latencies_s),
        offered_rate=rate,
        completed_fixed=len(fixed_run.ended),
        fixed_throughput=fixed_run.throughput,
        fixed_rate=Latency.of(fixed_run.latencies_s),
        max_wall_s=measured.max_meter.wall,
    )


def handlers(max_meter: Meter, fixed_meter: Meter) -> list[Handler]:
    """Each (service, consumed topic) that handled events at max rate, in pipeline order."""
    order = {service: n for n, (_, _, service) in reversed(list(enumerate(pipepath.stages())))}
    rows = []
    for (service, topic), (seconds, events) in max_meter.handlers.items():
        f_seconds, f_events = fixed_meter.handlers.get((service, topic), (0.0, 0.0))
        rows.append(
            Handler(
                service,
                topic,
                int(events),
                seconds / events,
                seconds / max_meter.wall if max_meter.wall else None,
                int(f_events),
                f_seconds / f_events if f_events else None,
                f_seconds / fixed_meter.wall if fixed_meter.wall else None,
            )
        )
    return sorted(rows, key=lambda h: (order.get(h.service, len(order)), h.service, h.topic))


async def stage_latencies(database_url: str, ticket_ids: list[str]) -> dict[tuple[str, str], Latency]:
    """Per (cause type, effect type): seconds from each event's cause to it (occurred_at)."""
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT c.type AS cause, e.type AS effect,
                      extract(epoch FROM e.occurred_at - c.occurred_at)::float8 AS s
               FROM audit.events e JOIN audit.events c ON c.event_id = e.event->>'causation_id'
               WHERE e.ticket_id = ANY($1::text[])""",
            ticket_ids,
        )
    finally:
        await conn.close()
    samples: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        samples.setdefault((r["cause"], r["effect"]), []).append(r["s"])
    return {k: Latency.of(v) for k, v in samples.items()}


async def sink_lag(database_url: str, ticket_ids: list[str]) -> tuple[Latency, float]:
    """recorded_at - occurred_at of the tickets' events, and their mean size as stored (bytes)."""
    conn = await connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT extract(epoch FROM recorded_at - occurred_at)::float8 AS s,
                      octet_length(event::text) AS size
               FROM audit.events WHERE ticket_id = ANY($1::text[])""",
            ticket_ids,
        )
    finally:
        await conn.close()
    sizes = [r["size"] for r in rows]
    return Latency.of([r["s"] for r in rows]), (sum(sizes) / len(sizes) if sizes else 0.0)


async def wait_sink_caught_up(settings: Settings, timeout: float) -> None:
    """Until the trace sink has committed everything on its topics (its consumer lag is 0)."""
    probe = LagProbe(settings)
    await probe.start()
    try:
        deadline = time.monotonic() + timeout
        while (await probe.measure(["trace-sink"])).get("trace-sink") != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the trace sink did not catch up within {timeout:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await probe.stop()


def finished_event(run_id: str, n: int, summary: str) -> TaskFinishedV2:
    """A stand-in for a resolved ticket's last event; only the trace sink and the console read them."""
    ticket = f"T-B{run_id}-S{n:05d}"
    return TaskFinishedV2(
        ticket_id=ticket,
        tenant_id=f"bench-{run_id}-sink",
        step=pipepath.hops(pipepath.WORKFLOW_ACTIONS["refunds"]),
        producer=client.CLI_PRODUCER,
        payload=TaskOutcome(
            outcome="resolved", summary=summary, actions=[f"act-{ticket}-{s}" for s in range(5)]
        ),
    )


class Drain(NamedTuple):
    persisted_per_s: float | None
    seconds: float | None  # sink ready → every event stored; None if it never was
    cpu_s: dict[str, float]  # per process group, meanwhile


async def sink_drain(stack: Stack, run_id: str, events: int, mean_bytes: float, timeout: float) -> Drain:
    """Stop the trace sink, put `events` task.finished events of the run's mean size on their
    topic, start it again and time the drain.

    The rate comes from the audit rows' recorded_at, which each batch stamps before it writes: the
    rows of every batch but the last over the time from the first batch to the last."""
    assert stack.supervisor is not None and stack.database_url
    settings = stack.settings()
    stack.supervisor.stop_service("trace-sink")
    summary = "x" * max(0, int(mean_bytes) - len(dumps(finished_event(run_id, 0, ""))))
    records = [finished_event(run_id, n, summary) for n in range(events)]
    topic = topics.topic_name(topics.TASKS_FINISHED, settings.topic_prefix)
    await publish(settings, [Message(topic, e.ticket_id or "", dumps(e)) for e in records])
    stack.supervisor.start_service("trace-sink")
    await asyncio.to_thread(stack.supervisor.wait_ready, 90.0, ["trace-sink"])
    ready = time.monotonic()
    groups = [g for g in process_groups(stack) if g.name in ("trace-sink", "console", BROKER, POSTGRES)]
    cpu = pipeprocs.cpu_times(groups)
    # The stand-in tickets' ids sort between these two: the ticket index counts them cheaply.
    ids = (f"T-B{run_id}-S", f"T-B{run_id}-T")
    conn = await connect(stack.database_url)
    try:
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM audit.events WHERE ticket_id >= $1 AND ticket_id < $2", *ids
            )
            if done >= events or time.monotonic() > ready + timeout:
                break
            await asyncio.sleep(0.1)
        drained = time.monotonic() - ready
        used = pipeprocs.cpu_used(cpu, pipeprocs.cpu_times(groups))
        row = await conn.fetchrow(
            """WITH b AS (SELECT recorded_at FROM audit.events WHERE ticket_id >= $1 AND ticket_id < $2)
               SELECT count(*) AS n, extract(epoch FROM max(recorded_at) - min(recorded_at))::float8 AS span,
                      count(*) FILTER (WHERE recorded_at = (SELECT max(recorded_at) FROM b)) AS last
               FROM b""",
            *ids,
        )
    finally:
        await conn.close()
    rate = (row["n"] - row["last"]) / row["span"] if row["span"] else None
    return Drain(rate, drained if done >= events else None, used)


def finished_steps(
    runs: list[PhaseRun], tickets: list[BenchTicket]
) -> tuple[Counter[str], dict[str, set[int]]]:
    """Outcomes of the finished tickets and the step (hop count) of their task.finished, by workflow."""
    workflow = {t.ticket_id: t.workflow for t in tickets}
    outcomes: Counter[str] = Counter()
    steps: dict[str, set[int]] = {}
    for run in runs:
        for key, value in run.end_values.items():
            event = orjson.loads(value)
            outcomes[event["payload"]["outcome"]] += 1
            steps.setdefault(workflow[key], set()).add(event["step"])
    return outcomes, steps


async def run_pipeline(
    stack: Stack, phases: dict[str, list[BenchTicket]], config: Config, progress: Progress
) -> tuple[Measured, float]:
    """Warm-up, max rate, then the fixed rate (given, or half the max); returns the fixed rate."""
    settings = stack.settings()
    entry = topics.topic_name(topics.TICKETS_RECEIVED, settings.topic_prefix)
    finish = topics.topic_name(topics.TASKS_FINISHED, settings.topic_prefix)
    groups, ports = process_groups(stack), metrics_ports(stack)

    async def phase(label: str, name: str, rate: float | None) -> tuple[PhaseRun, Meter]:
        tickets = phases[name]
        sends = [Send(t.ticket_id, partial(ticket_message, entry, t)) for t in tickets]
        bar = progress.phase(label, len(tickets))
        load = drive(settings, label, sends, finish, rate=rate, timeout=config.timeout, progress=bar)
        return await measured(groups, ports, load)

    await phase("pipeline warm-up", "W", None)
    progress.note(f"measuring the idle stack for {IDLE_S:g} s")
    idle = Meter(groups, {})
    await idle.start()
    await asyncio.sleep(IDLE_S)
    await idle.stop()
    max_run, max_meter = await phase("pipeline max rate", "M", None)
    rate = config.rate or max(0.1, round(max_run.throughput / 2, 1))
    fixed_run, fixed_meter = await phase(f"pipeline {rate:g} t/s", "F", rate)
    rss = {g.name: pipeprocs.peak_rss_mb(g.pid) for g in groups}
    return Measured(max_run, max_meter, fixed_run, fixed_meter, rss, idle), rate


async def run_relay(
    stack: Stack,
    phases: dict[str, list[BenchTicket]],
    hops: dict[str, int],
    rate: float,
    config: Config,
    progress: Progress,
) -> tuple[Measured, list[str]]:
    """The same phases through a relay of as many hops as the longest ticket's, on the stack's
    broker; returns the hop process names too."""
    settings = stack.settings()
    relay = Relay(settings, max(hops.values()), stack.state_dir / "relay", env=stack.service_env_overrides())
    broker = [g for g in process_groups(stack) if g.name == BROKER]
    try:
        await relay.start()
        groups = [pipeprocs.Group(name, pid) for name, pid in relay.pids.items()] + broker

        async def phase(label: str, name: str, rate: float | None) -> tuple[PhaseRun, Meter]:
            tickets = phases[name]
            sends = [
                Send(t.relay_id, partial(ticket_message, relay.entry_topic(hops[t.workflow]), t, t.relay_id))
                for t in tickets
            ]
            bar = progress.phase(label, len(tickets))
            load = drive(
                settings, label, sends, relay.last_topic, rate=rate, timeout=config.timeout, progress=bar
            )
            return await measured(groups, {}, load)

        await phase("relay warm-up", "W", None)
        idle = Meter(groups, {})
        await idle.start()
        await asyncio.sleep(IDLE_S)
        await idle.stop()
        max_run, max_meter = await phase("relay max rate", "M", None)
        fixed_run, fixed_meter = await phase(f"relay {rate:g} t/s", "F", rate)
        rss = {name: pipeprocs.peak_rss_mb(pid) for name, pid in relay.pids.items()}
        return Measured(max_run, max_meter, fixed_run, fixed_meter, rss, idle), list(relay.pids)
    finally:
        relay.stop()


async def run(stack: Stack, config: Config, progress: Progress) -> BenchReport:
    """Both sides, one after the other on the stack's broker: the pipeline with every service up,
    then the relay with the services stopped (neither idles beside the other)."""
    assert stack.database_url and stack.supervisor is not None
    settings = stack.settings()
    run_id = uuid.uuid4().hex[:6].upper()
    order_base = random.randrange(10**9, 8 * 10**9, 10**6)
    user_base = random.randrange(10**9, 8 * 10**9, 10**6)
    n, warm = config.tickets, min(config.warmup, config.tickets)
    phases = {
        p: plan(run_id, p, count, config.it_share, order_base + i * 10**5, user_base + i * 10**5)
        for i, (p, count) in enumerate((("W", warm), ("M", n), ("F", n)))
    }
    await seed(stack.database_url, (t for ts in phases.values() for t in ts))
    hops = {w: pipepath.hops(a) for w, a in pipepath.WORKFLOW_ACTIONS.items()}

    pipeline, rate = await run_pipeline(stack, phases, config, progress)
    progress.note("waiting for the trace sink to catch up")
    await wait_sink_caught_up(settings, config.timeout)
    ids = {p: [t.ticket_id for t in phases[p]] for p in ("M", "F")}
    stages = {p: await stage_latencies(stack.database_url, ids[p]) for p in ids}
    lag_max, mean_bytes = await sink_lag(stack.database_url, ids["M"])
    lag_fixed, _ = await sink_lag(stack.database_url, ids["F"])

    progress.note(f"trace sink: draining a backlog of {config.sink_events} events")
    drain = await sink_drain(stack, run_id, config.sink_events, mean_bytes, config.timeout)
    if (sink := stack.supervisor.procs["trace-sink"].proc) is not None:
        peaks = [
            x for x in (pipeline.rss.get("trace-sink"), pipeprocs.peak_rss_mb(sink.pid)) if x is not None
        ]
        pipeline.rss["trace-sink"] = max(peaks, default=None)

    progress.note("stopping the services; starting the relay")
    groups = process_groups(stack)
    stack.supervisor.stop()
    relay, relay_names = await run_relay(stack, phases, hops, rate, config, progress)

    outcomes, steps = finished_steps([pipeline.max_run, pipeline.fixed_run], phases["M"] + phases["F"])

    def processes(m: Measured, names: list[str], service: bool) -> list[Process]:
        idle = m.idle.used if m.idle is not None else {}
        wall = m.idle.wall if m.idle is not None else 0.0
        return [
            Process(
                name,
                m.rss.get(name),
                m.max_meter.used.get(name),
                m.fixed_meter.used.get(name),
                service,
                idle[name] / wall if name in idle and wall else None,
            )
            for name in names
        ]

    return BenchReport(
        tickets=n,
        mix=dict(Counter(t.workflow for t in phases["M"])),
        hops=hops,
        observed_hops={w: sorted(s) for w, s in steps.items()},
        relay_hops=max(hops.values()),
        outcomes=dict(outcomes),
        pipeline=side(n, pipeline, rate),
        relay=side(n, relay, rate),
        stages=[
            Stage(cause, effect, service, stages["M"].get(key, NONE), stages["F"].get(key, NONE))
            for cause, effect, service in pipepath.stages()
            if (key := (cause, effect))
        ],
        handlers=handlers(pipeline.max_meter, pipeline.fixed_meter),
        sink=Sink(lag_max, lag_fixed, config.sink_events, mean_bytes, *drain),
        processes=[
            *processes(pipeline, [g.name for g in groups if g.name not in INFRASTRUCTURE], True),
            *processes(pipeline, [g.name for g in groups if g.name in INFRASTRUCTURE], False),
        ],
        relay_processes=processes(relay, relay_names, False),
        relay_infrastructure=processes(relay, [BROKER] if BROKER in relay.max_meter.used else [], False),
        notes=[
            "max rate: every ticket offered at once, e2e includes the queue; the reconciler waits "
            f"{config.timeout:g} s before it re-drives a ticket (a queued ticket is not stalled)"
        ],
        machine={
            "cores": float(len(os.sched_getaffinity(0))),
            "busy_pipeline_max": pipeline.max_meter.busy,
            "own_pipeline_max": pipeline.max_meter.own,
            "busy_relay_max": relay.max_meter.busy,
            "own_relay_max": relay.max_meter.own,
        },
    )
