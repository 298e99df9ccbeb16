"""The KPIs as OpenTelemetry observable gauges (plain metrics API: whichever MeterProvider the process
sets up exports them; none set up = no-op)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from agentbus.shared.kpis import KpiLedger, Kpis, window
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

# gauge name → (Kpis field, unit, description)
GAUGES = {
    "agentbus_kpi_coverage": ("coverage", "1", "share of received tickets routed to an agent workflow"),
    "agentbus_kpi_automation_rate": ("automation_rate", "1", "finished tickets resolved with no human"),
    "agentbus_kpi_escalation_rate": ("escalation_rate", "1", "finished tickets escalated to a human"),
    "agentbus_kpi_verifier_failures": ("verifier_failures", "{failure}", "failed verifications"),
    # "{USD}", not "USD": the Prometheus exporter appends a plain unit to the name (…_usd_USD).
    "agentbus_kpi_cost_per_resolved_usd": (
        "cost_per_resolved_usd",
        "{USD}",
        "model cost per resolved ticket",
    ),
    "agentbus_kpi_latency_p50_seconds": ("latency_p50_s", "s", "received to finished, median"),
    "agentbus_kpi_latency_p95_seconds": ("latency_p95_s", "s", "received to finished, 95th percentile"),
}


class KpiGauges:
    """Figures over the last `window_s`, computed at most once per second however many gauges read."""

    def __init__(self, ledger: KpiLedger, window_s: float) -> None:
        self.ledger = ledger
        self.window_s = window_s
        self._cached: tuple[float, Kpis] | None = None

    def figures(self) -> Kpis:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > 1.0:
            self._cached = (now, self.ledger.figures(*window(datetime.now(UTC), self.window_s)))
        return self._cached[1]

    def register(self, meter_provider: metrics.MeterProvider | None = None) -> None:
        """On the global MeterProvider (whatever the process set up), or the one given."""
        meter = metrics.get_meter("agentbus.console", meter_provider=meter_provider)
        attributes = {"window_s": int(self.window_s)}
        for name, (attr, unit, description) in GAUGES.items():
            meter.create_observable_gauge(
                name,
                callbacks=[self._callback(attr, attributes)],
                unit=unit,
                description=f"{description} (last {int(self.window_s)} s; see agentbus.shared.kpis)",
            )

    def _callback(
        self, attr: str, attributes: dict[str, int]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            value = getattr(self.figures(), attr)
            # No data (an empty window) is no sample, not a 0 that would read as "all bad".
            return [] if value is None else [Observation(float(value), attributes)]

        return observe
