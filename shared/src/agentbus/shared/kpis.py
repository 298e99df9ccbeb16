"""Operating KPIs from events (wire-shape dicts): the one definition the console, its gauges and tests use.

Every figure is for a window [start, end) of event time (`occurred_at`, set by the producer):

* **coverage** — of the tickets *received* in the window (a `ticket.received` event in it), the share
  that intake routed to an agent workflow (a `task.classified` whose `workflow` is not null), rather
  than straight to a human.
* The next four are over the tickets *finished* in the window: those whose first `task.finished`
  falls in it (a duplicate or re-driven later `task.finished` does not move a ticket).
* **automation rate** — finished tickets with outcome `resolved` that never involved a human: no
  `action.decided` with verdict `needs_approval`, no `approval.decided` and no `escalation.requested`
  anywhere in the ticket — divided by the finished tickets.
* **escalation rate** — finished tickets with outcome `escalated` / finished tickets.
* **cost per resolved ticket** (USD) — the model cost of *all* finished tickets (`task.finished`
  `payload.usage.cost_microdollars`, resolved or escalated: failures are part of what a resolution
  costs) / the resolved ones among them; None when none was resolved.
* **latency p50 / p95** (seconds) — from `ticket.received` to the first `task.finished`, over the
  finished tickets whose `ticket.received` is known; percentiles interpolate linearly between the
  closest ranks (PostgreSQL's `percentile_cont`); None when there is no such ticket.
* **verifier failures** — `action.verified` events with `verified` false in the window (a count).

A rate with an empty denominator is None, not 0: "no data" must not read as "all bad".
Events are counted once per `event_id`, so redelivered and re-driven duplicates change nothing.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

HUMAN_EVENTS = frozenset({"approval.decided", "escalation.requested"})


def event_time(event: Mapping[str, Any]) -> datetime:
    at = event["occurred_at"]
    return at if isinstance(at, datetime) else datetime.fromisoformat(str(at).replace("Z", "+00:00"))


@dataclass
class TicketFacts:
    """What the KPIs need of one ticket, whatever order its events arrive in."""

    received_at: datetime | None = None
    covered: bool = False
    finished_at: datetime | None = None
    outcome: str | None = None
    cost_microdollars: int = 0
    human: bool = False
    verifier_failures: dict[str, datetime] = field(default_factory=dict)  # event id → time


@dataclass(frozen=True)
class Kpis:
    start: datetime
    end: datetime
    received: int
    covered: int
    coverage: float | None
    finished: int
    resolved: int
    automated: int
    automation_rate: float | None
    escalated: int
    escalation_rate: float | None
    verifier_failures: int
    cost_microdollars: int
    cost_per_resolved_usd: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"], data["end"] = self.start.isoformat(), self.end.isoformat()
        return data


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont(p)."""
    if not sorted_values:
        return None
    pos = p * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


@dataclass
class KpiLedger:
    """Per-ticket facts folded from events as they arrive; figures for any window on demand.

    Every fact is a minimum, an "ever", or keyed by event id, so a duplicate changes nothing and no
    set of every event id seen is needed. Keeps the newest `capacity` tickets (by first sight):
    bounded memory in a long-running console; windows reaching back past them are undercounted.
    """

    capacity: int = 100_000
    tickets: OrderedDict[str, TicketFacts] = field(default_factory=OrderedDict)

    def add(self, event: Mapping[str, Any]) -> None:
        ticket_id = event.get("ticket_id")
        if not ticket_id:
            return  # switches and dead letters of unreadable messages: no KPI counts them
        kind, payload = event["type"], event.get("payload") or {}
        facts = self.tickets.get(ticket_id)
        if facts is None:
            facts = self.tickets[ticket_id] = TicketFacts()
            while len(self.tickets) > self.capacity:
                self.tickets.popitem(last=False)
        at = event_time(event)
        if kind == "ticket.received":
            facts.received_at = at if facts.received_at is None else min(facts.received_at, at)
        elif kind == "task.classified":
            facts.covered = facts.covered or payload.get("workflow") is not None
        elif kind == "task.finished":
            if facts.finished_at is None or at < facts.finished_at:
                usage = payload.get("usage") or {}
                facts.finished_at, facts.outcome = at, payload.get("outcome")
                facts.cost_microdollars = int(usage.get("cost_microdollars") or 0)
        elif kind == "action.verified" and payload.get("verified") is False:
            facts.verifier_failures[event["event_id"]] = at
        elif kind in HUMAN_EVENTS or (
            kind == "action.decided" and payload.get("verdict") == "needs_approval"
        ):
            facts.human = True

    def figures(self, start: datetime, end: datetime) -> Kpis:
        received = covered = finished = resolved = automated = escalated = cost = failures = 0
        latencies: list[float] = []
        for t in self.tickets.values():
            failures += sum(start <= at < end for at in t.verifier_failures.values())
            if t.received_at is not None and start <= t.received_at < end:
                received += 1
                covered += t.covered
            if t.finished_at is None or not start <= t.finished_at < end:
                continue
            finished += 1
            cost += t.cost_microdollars
            if t.outcome == "resolved":
                resolved += 1
                automated += not t.human
            elif t.outcome == "escalated":
                escalated += 1
            if t.received_at is not None:
                latencies.append((t.finished_at - t.received_at).total_seconds())
        latencies.sort()
        return Kpis(
            start=start,
            end=end,
            received=received,
            covered=covered,
            coverage=_ratio(covered, received),
            finished=finished,
            resolved=resolved,
            automated=automated,
            automation_rate=_ratio(automated, finished),
            escalated=escalated,
            escalation_rate=_ratio(escalated, finished),
            verifier_failures=failures,
            cost_microdollars=cost,
            cost_per_resolved_usd=cost / resolved / 1_000_000 if resolved else None,
            latency_p50_s=percentile(latencies, 0.5),
            latency_p95_s=percentile(latencies, 0.95),
        )

    def series(self, start: datetime, end: datetime, buckets: int = 12) -> list[Kpis]:
        """The window cut into `buckets` equal consecutive windows, for the charts."""
        step = (end - start) / buckets
        return [self.figures(start + step * i, start + step * (i + 1)) for i in range(buckets)]


def compute(events: Iterable[Mapping[str, Any]], start: datetime, end: datetime) -> Kpis:
    """Events in, figures out: the KPIs of the window [start, end)."""
    ledger = KpiLedger()
    for event in events:
        ledger.add(event)
    return ledger.figures(start, end)


def window(end: datetime, seconds: float) -> tuple[datetime, datetime]:
    return end - timedelta(seconds=seconds), end
