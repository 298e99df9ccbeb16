"""KPIs from events (agentbus.shared.kpis) on a hand-made history whose figures are known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from agentbus.shared.kpis import KpiLedger, compute, percentile

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
_ids = count()


def ev(ticket: str | None, kind: str, at_s: float, **payload: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{next(_ids)}",
        "type": kind,
        "ticket_id": ticket,
        "occurred_at": (T0 + timedelta(seconds=at_s)).isoformat(),
        "payload": payload,
    }


def ticket(
    tid: str,
    received: float,
    finished: float | None,
    outcome: str = "resolved",
    *,
    cost: int = 0,
    workflow: str | None = "refunds",
    human: str | None = None,
) -> list[dict[str, Any]]:
    events = [
        ev(tid, "ticket.received", received),
        ev(tid, "task.classified", received + 0.1, workflow=workflow),
    ]
    if human == "approval":
        events.append(ev(tid, "action.decided", received + 0.2, verdict="needs_approval"))
        events.append(ev(tid, "approval.decided", received + 0.3, approved=True))
    elif human == "escalation":
        events.append(ev(tid, "escalation.requested", received + 0.2, reason="not_eligible"))
    if finished is not None:
        events.append(ev(tid, "task.finished", finished, outcome=outcome, usage={"cost_microdollars": cost}))
    return events


# Window: [T0, T0 + 100 s).
HISTORY = [
    *ticket("A", 1, 3, cost=1_000),  # resolved alone in 2 s
    *ticket("B", 2, 6, cost=2_000, human="approval"),  # resolved after approval in 4 s
    *ticket("C", 3, 9, "escalated", cost=3_000, human="escalation"),  # escalated in 6 s
    *ticket("D", 4, 12, workflow=None, outcome="escalated", human="escalation"),  # not covered, 8 s
    *ticket("E", 5, None),  # received, still running: coverage only
    *ticket("F", -50, 50, cost=4_000),  # received before the window, finished in it: 100 s
    *ticket("G", 90, 150),  # received in the window, finished after it
    ev("A", "action.verified", 2, verified=True),
    ev("B", "action.verified", 5, verified=False),
    ev("B", "action.verified", 120, verified=False),  # after the window
]


def test_figures_of_a_known_window() -> None:
    k = compute(HISTORY, T0, T0 + timedelta(seconds=100))
    # Received in the window: A B C D E G (F came before); covered: all but D.
    assert (k.received, k.covered, k.coverage) == (6, 5, pytest.approx(5 / 6))
    # Finished in the window: A B C D F; resolved A B F; automated A F; escalated C D.
    assert (k.finished, k.resolved, k.automated, k.escalated) == (5, 3, 2, 2)
    assert k.automation_rate == pytest.approx(2 / 5)
    assert k.escalation_rate == pytest.approx(2 / 5)
    # Cost of every finished ticket (10 000 µ$) over the 3 resolved ones.
    assert k.cost_microdollars == 10_000
    assert k.cost_per_resolved_usd == pytest.approx(0.01 / 3)
    # Latencies 2 4 6 8 100: median 6; p95 at rank 3.8 → 8 + 0.8 * 92.
    assert k.latency_p50_s == pytest.approx(6.0)
    assert k.latency_p95_s == pytest.approx(81.6)
    assert k.verifier_failures == 1


def test_an_empty_window_has_no_rates_rather_than_zero() -> None:
    k = compute(HISTORY, T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert (k.received, k.finished, k.verifier_failures) == (0, 0, 0)
    assert k.coverage is None and k.automation_rate is None and k.escalation_rate is None
    assert k.cost_per_resolved_usd is None and k.latency_p50_s is None and k.latency_p95_s is None


def test_duplicates_and_order_change_nothing() -> None:
    shuffled = list(reversed(HISTORY)) + HISTORY[:10]  # every event again, some twice
    end = T0 + timedelta(seconds=100)
    assert compute(shuffled, T0, end) == compute(HISTORY, T0, end)


def test_a_second_task_finished_does_not_move_the_ticket() -> None:
    events = [*ticket("A", 1, 3), ev("A", "task.finished", 200, outcome="escalated")]
    k = compute(events, T0, T0 + timedelta(seconds=100))
    assert (k.finished, k.resolved, k.escalated) == (1, 1, 0)
    later = compute(events, T0 + timedelta(seconds=100), T0 + timedelta(seconds=300))
    assert later.finished == 0


def test_series_buckets_add_up_to_the_window() -> None:
    ledger = KpiLedger()
    for e in HISTORY:
        ledger.add(e)
    buckets = ledger.series(T0, T0 + timedelta(seconds=100), buckets=10)
    assert len(buckets) == 10
    assert sum(b.finished for b in buckets) == 5
    assert [b.finished for b in buckets[:2]] == [3, 1]  # A B C in [0, 10), D at 12 s; F at 50 s
    assert buckets[5].finished == 1 and buckets[5].latency_p50_s == pytest.approx(100.0)


def test_percentile_matches_percentile_cont() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)
