"""Metrics: a process's Prometheus endpoint serves the bus's instruments and whatever other code
registers through the plain OpenTelemetry API (the console's KPIs), under the names the Grafana
dashboard queries; the stack gives each process its own port."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from agentbus.cli.runtime import Supervisor, free_port
from agentbus.console.gauges import GAUGES

REPO = Path(__file__).resolve().parents[2]

# A service process as the console would be: setup_metrics, then KPI gauges through the API alone.
PROCESS = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from opentelemetry import metrics
    from opentelemetry.metrics import Observation
    from agentbus.shared.metrics import BusMetrics, setup_metrics
    from agentbus.shared.settings import Settings

    from agentbus.console.gauges import KpiGauges
    from agentbus.shared.kpis import KpiLedger

    setup_metrics(Settings(service="console"))  # port from AGENTBUS_METRICS_PORT
    meter = metrics.get_meter("agentbus.console")
    meter.create_observable_gauge("agentbus_test_gauge", unit="s", callbacks=[lambda _: [Observation(2.5)]])
    # The console's own gauges, on one resolved ticket that cost $0.25.
    ledger = KpiLedger()
    for n, kind, payload in (
        (1, "ticket.received", {}),
        (2, "task.classified", {"workflow": "refunds"}),
        (3, "task.finished", {"outcome": "resolved", "usage": {"cost_microdollars": 250000}}),
    ):
        at = datetime.now(UTC).isoformat()
        event = {"event_id": str(n), "type": kind, "ticket_id": "T-1", "occurred_at": at}
        ledger.add(event | {"payload": payload})
    KpiGauges(ledger, window_s=3600).register()
    bus = BusMetrics("planner")
    bus.handled("agentbus.tasks.classified.v1", "task.classified", "ok", 0.02)
    bus.handled("agentbus.tasks.classified.v1", "task.classified", "dead_lettered", 0.5)
    bus.dead_letter("agentbus.tasks.classified.v1", "handler_failed")
    print("ready", flush=True)
    time.sleep(60)
    """
)


def scrape(port: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_prometheus_endpoint_serves_bus_metrics_and_kpis_registered_through_the_api():
    port = free_port()
    env = {"AGENTBUS_METRICS_PORT": str(port), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-c", PROCESS], env=env, stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        lines = [line for line in scrape(port).splitlines() if not line.startswith("#")]
    finally:
        proc.kill()
        proc.wait()

    def value(name: str, **labels: str) -> float:
        found = [
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
        ]
        assert len(found) == 1, (name, labels, [ln for ln in lines if ln.startswith(name)])
        return found[0]

    assert value("agentbus_test_gauge_seconds", service_name="agentbus-console") == 2.5
    # Every KPI gauge under exactly the name the Grafana dashboard queries (no unit suffix).
    assert value("agentbus_kpi_coverage", service_name="agentbus-console") == 1.0
    assert value("agentbus_kpi_automation_rate") == 1.0
    assert value("agentbus_kpi_escalation_rate") == 0.0
    assert value("agentbus_kpi_cost_per_resolved_usd") == 0.25
    assert value("agentbus_kpi_latency_p95_seconds") >= 0.0
    assert {ln.split("{")[0] for ln in lines if ln.startswith("agentbus_kpi_")} == set(GAUGES)
    stage = {"service": "planner", "topic": "agentbus.tasks.classified.v1", "event_type": "task.classified"}
    assert value("agentbus_events_processed_total", outcome="ok", **stage) == 1
    assert value("agentbus_events_processed_total", outcome="dead_lettered", **stage) == 1
    assert value("agentbus_events_dead_lettered_total", reason="handler_failed", service="planner") == 1
    assert value("agentbus_handler_duration_seconds_count", outcome="ok", **stage) == 1
    assert value("agentbus_handler_duration_seconds_bucket", outcome="ok", le="0.025", **stage) == 1
    assert value("agentbus_handler_duration_seconds_bucket", outcome="ok", le="0.01", **stage) == 0


def test_the_stack_gives_every_process_its_own_metrics_port(tmp_path: Path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    supervisor = Supervisor(
        env={"AGENTBUS_METRICS_PORT": "19400", "PATH": "/usr/bin:/bin"},
        log_dir=tmp_path / "logs",
        services={"intake": sleeper, "policy": sleeper, "trace-sink": sleeper},
        replicas={"policy": 2},
    )
    supervisor.start()
    try:
        ports = {p["service"]: p["metrics_port"] for p in supervisor.describe()}
    finally:
        supervisor.stop()
    assert ports == {"intake": 19400, "policy": 19401, "policy-2": 19402, "trace-sink": 19403}


# The KPI gauges the console exports, by these exact names (agreed with the console's owner).
KPIS = {
    "agentbus_kpi_coverage",
    "agentbus_kpi_automation_rate",
    "agentbus_kpi_escalation_rate",
    "agentbus_kpi_verifier_failures",
    "agentbus_kpi_cost_per_resolved_usd",
    "agentbus_kpi_latency_p50_seconds",
    "agentbus_kpi_latency_p95_seconds",
}
# What the services export (see the scrape above and the integration test), as Prometheus names.
SERVED = {
    "agentbus_events_processed_total",
    "agentbus_events_dead_lettered_total",
    "agentbus_handler_duration_seconds_bucket",
    "agentbus_handler_duration_seconds_count",
    "agentbus_consumer_lag",
    "gen_ai_client_token_usage_sum",
    "gen_ai_client_operation_duration_seconds_count",
    "gen_ai_client_operation_duration_seconds_bucket",
}


def test_the_grafana_dashboard_queries_the_kpis_and_the_bus_metrics_by_their_names():
    dashboard = json.loads((REPO / "deploy" / "grafana" / "agentbus.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    # Metric names, not the labels (gen_ai_request_model, …) grouped by.
    bare = [re.sub(r"by \([^)]*\)", "", e) for e in exprs]
    queried = {name for e in bare for name in re.findall(r"\b(?:agentbus|gen_ai)_[a-z0-9_]+", e)}
    assert queried == KPIS | SERVED
    assert {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p} == {"${datasource}"}
