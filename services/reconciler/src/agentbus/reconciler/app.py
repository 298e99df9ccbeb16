"""Reconciler composition root and loop (`python -m agentbus.reconciler`): every
`reconcile_interval_s`, make sure the topics exist, follow the audit store, and re-drive the last step
of each ticket that is not settled, has not moved for `reconcile_after_s`, and is not merely queued:
its records were lost with the broker, or every consumer passed them and nothing came of it
(DESIGN §3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
from agentbus.shared.bus import clear_ready, ensure_topics, mark_ready
from agentbus.shared.db import open_pool
from agentbus.shared.metrics import LagGauge, setup_metrics
from agentbus.shared.redrive import Redriver, RedriveReport, StoredEvent, new_run_id
from agentbus.shared.settings import Settings
from agentbus.shared.status import SETTLED, ticket_status
from agentbus.shared.telemetry import setup_tracing
from agentbus.shared.tools import load_registry

from . import store
from .broker import BrokerLog, RecordState, consumer_groups
from .stalls import StallTracker, awaited, frontier

log = logging.getLogger("agentbus.reconciler")

BATCH = 200  # tickets whose events are read in one query


class Reconciler:
    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.tracker = StallTracker(
            timedelta(seconds=settings.reconcile_after_s), settings.reconcile_max_attempts
        )
        self.position = 0  # the audit chain read so far
        self.counts: Counter[str] = Counter()
        self.groups = consumer_groups(settings)
        self._reported: tuple[Counter[str], float] = (Counter(), 0.0)

    async def run_pass(self, now: datetime | None = None) -> None:
        try:
            # A broker that lost its memory comes back without topics; services wait for them.
            if created := await ensure_topics(self.settings):
                log.warning("created %d missing topics: %s", len(created), ", ".join(created))
                self.counts["topics_created"] += len(created)
        except Exception as exc:  # the broker may be down; the audit store still says who is stuck
            log.warning("could not check topics: %r", exc)
        await self._follow()
        now = now or datetime.now(UTC)
        if due := self.tracker.due(now):
            broker = BrokerLog(self.settings, self.groups)
            try:
                await broker.start()
            except Exception as exc:
                log.warning("broker unreachable, nothing re-driven this pass: %r", exc)
            else:
                try:
                    await self._look(due, broker, now)
                finally:
                    await broker.stop()
        self.counts["passes"] += 1
        self._report()

    def _report(self) -> None:
        """The counts, when they changed, at most every 10 s."""
        last, at = self._reported
        moment = asyncio.get_running_loop().time()
        changed = any(n != last[k] for k, n in self.counts.items() if k != "passes")
        if changed and moment - at >= 10:
            log.info("counts: %s", dict(self.counts))
            self._reported = (self.counts.copy(), moment)

    async def _follow(self) -> None:
        while rows := await store.events_after(self.pool, self.position):
            for seen in rows:
                self.tracker.saw(seen.ticket_id, seen.position, seen.recorded_at)
            self.position = rows[-1].position

    async def _look(self, due: list[str], broker: BrokerLog, now: datetime) -> None:
        for start in range(0, len(due), BATCH):
            chunk = due[start : start + BATCH]
            stored = await store.events_of(self.pool, chunk)
            plan: dict[str, list[StoredEvent]] = {}
            for tid in chunk:
                events = stored.get(tid, [])
                if ticket_status(e.event for e in events) in SETTLED:
                    self.tracker.forget(tid)
                elif self.tracker.exhausted(tid):
                    self._give_up(tid, events)
                elif await self._queued(tid, last := frontier(events), broker):
                    # A consumer has yet to reach it: a re-drive would only add work to a busy
                    # pipeline. Look again later.
                    self.tracker.waited(tid, now)
                    self.counts["waiting"] += 1
                else:
                    plan[tid] = last
            if plan:
                await self._send(plan, now)

    async def _queued(self, tid: str, last: list[StoredEvent], broker: BrokerLog) -> bool:
        """Whether the ticket's last records (or the copies re-driven last) still wait for a consumer.
        Lost or passed records are not; nor, after max_attempts looks, are records no consumer has
        committed on (a consumer that skipped them, e.g. after a broker restart, would never)."""
        watch = self.tracker.watches[tid]
        states = [await broker.state(event_id, where) for event_id, where in awaited(watch, last)]
        if not states or any(s in (RecordState.LOST, RecordState.PASSED) for s in states):
            return False
        if RecordState.QUEUED in states:
            return True
        return watch.waits < self.settings.reconcile_max_attempts

    def _give_up(self, tid: str, events: list[StoredEvent]) -> None:
        watch = self.tracker.watches[tid]
        self.tracker.forget(tid)
        self.counts["gave_up"] += 1
        last = frontier(events)
        log.error(
            "giving up on %s: no progress after %d re-drives since %s (step %s); a human should look "
            "(`agentbus trace %s`)",
            tid,
            watch.redrives,
            ", ".join(e.type for e in last) or "-",
            last[0].event.get("step") if last else "-",
            tid,
        )

    async def _send(self, plan: dict[str, list[StoredEvent]], now: datetime) -> None:
        report = RedriveReport(run_id=new_run_id(), stage=None)
        try:
            async with Redriver(self.settings) as redriver:
                await redriver.send([e for events in plan.values() for e in events], report)
        except Exception as exc:  # not counted as a look: nothing reached the stages
            log.warning("re-drive of %d tickets failed, will retry: %r", len(plan), exc)
            return
        for tid, events in plan.items():
            attempt = self.tracker.redriven(tid, now, report.copies.get(tid, []))
            log.warning(
                "re-drove %s (attempt %d, %s): %s",
                tid,
                attempt,
                report.run_id,
                ", ".join(f"{e.type}@{e.position}" for e in events),
            )
        self.counts["tickets_redriven"] += len(plan)
        self.counts["events_redriven"] += report.total


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # each look re-assigns a partition
    settings = Settings(service="reconciler")
    clear_ready(settings)
    setup_tracing(settings)  # re-drives are spans in their tickets' traces
    setup_metrics(settings)
    # The reconciler watches every stage, so it reports their consumer lag, a dead one's too.
    lag = LagGauge(settings, stage_processes(settings), asyncio.get_running_loop(), min_interval_s=5.0)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    pool = await open_pool(settings)
    reconciler = Reconciler(settings, pool)
    log.info(
        "reconciler: looks at tickets idle for %.0fs every %.1fs; %d re-drives each at most",
        settings.reconcile_after_s,
        settings.reconcile_interval_s,
        settings.reconcile_max_attempts,
    )
    try:
        ready = False
        while not stopping.is_set():
            try:
                await reconciler.run_pass()
            except Exception:  # the database or broker may be down for a while; try again next pass
                log.exception("reconcile pass failed")
            if not ready:
                mark_ready(settings)
                ready = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), settings.reconcile_interval_s)
    finally:
        await lag.close()
        await pool.close()


def stage_processes(settings: Settings) -> list[str]:
    """The services whose consumer lag is reported, named as `agentbus up` runs them (an executor
    per tool group)."""
    executors = [f"executor-{g}" for g in load_registry(settings.tools_dir).groups()]
    return ["intake", "planner", "policy", *executors, "verifier", "escalation", "trace-sink"]
