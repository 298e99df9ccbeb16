"""The console's KPI gauges: the names the Grafana dashboard uses, fed by the same KPI ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agentbus.console.gauges import GAUGES, KpiGauges
from agentbus.shared.kpis import KpiLedger
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def event(n: int, ticket: str, kind: str, ago_s: float, **payload: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(seconds=ago_s)
    return {
        "event_id": f"e{n}",
        "type": kind,
        "ticket_id": ticket,
        "occurred_at": at.isoformat(),
        "payload": payload,
    }


def test_gauges_report_the_ledgers_figures_under_their_names() -> None:
    ledger = KpiLedger()
    for e in (
        event(1, "A", "ticket.received", 10),
        event(2, "A", "task.classified", 9.9, workflow="refunds"),
        event(3, "A", "task.finished", 8, outcome="resolved", usage={"cost_microdollars": 1500}),
        event(4, "B", "ticket.received", 7),
        event(5, "B", "task.classified", 6.9, workflow=None),
        event(6, "B", "escalation.requested", 6.8, reason="out_of_scope"),
        event(7, "B", "task.finished", 6, outcome="escalated"),
        event(8, "A", "action.verified", 8.5, verified=False),
    ):
        ledger.add(e)
    reader = InMemoryMetricReader()
    KpiGauges(ledger, window_s=60).register(MeterProvider(metric_readers=[reader]))
    data = reader.get_metrics_data()
    assert data is not None
    values = {
        metric.name: point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    }
    assert set(values) == set(GAUGES)
    assert values["agentbus_kpi_coverage"] == 0.5
    assert values["agentbus_kpi_automation_rate"] == 0.5
    assert values["agentbus_kpi_escalation_rate"] == 0.5
    assert values["agentbus_kpi_verifier_failures"] == 1
    assert values["agentbus_kpi_cost_per_resolved_usd"] == 0.0015
    assert abs(values["agentbus_kpi_latency_p50_seconds"] - 1.5) < 0.01  # A: 2 s, B: 1 s
    assert abs(values["agentbus_kpi_latency_p95_seconds"] - 1.95) < 0.01


def test_an_empty_window_reports_no_rates_rather_than_zero() -> None:
    reader = InMemoryMetricReader()
    KpiGauges(KpiLedger(), window_s=60).register(MeterProvider(metric_readers=[reader]))
    data = reader.get_metrics_data()
    points = {
        metric.name: len(metric.data.data_points)
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert points.get("agentbus_kpi_automation_rate", 0) == 0
    assert points.get("agentbus_kpi_verifier_failures") == 1  # a count of 0 is a figure
