"""One trace per ticket: every service a ticket passes (each its own process) exports its spans over
OTLP to a local collector, and the ticket's spans form one trace, parent-linked from a single root:
across Kafka hops, the trace sink's batches, the approvals API and the model calls."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from pathlib import Path

import httpx
import pytest
from agentbus.cli import client, demo
from agentbus.cli.main import start_model_server
from agentbus.cli.model_server import DEMO_SCRIPT
from agentbus.shared.status import FINAL
from agentbus.shared.telemetry import ticket_trace_id
from otlp_collector import OtlpCollector, Span

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer alice-demo-token"}  # refund-approver
SERVICES = ["intake", "planner", "policy", "executor", "verifier", "escalation", "trace-sink", "reconciler"]
# Every ticket's path; the executors are the tool groups a refund uses.
PASSED = {
    "agentbus-intake",
    "agentbus-planner",
    "agentbus-policy",
    "agentbus-executor-commerce",
    "agentbus-executor-helpdesk",
    "agentbus-verifier",
    "agentbus-escalation",  # reads every decision
    "agentbus-trace-sink",
}


def metrics_ports(count: int) -> int:
    """The first of `count` consecutive free ports, for AGENTBUS_METRICS_PORT (each process takes the
    next one). Below the kernel's range for outgoing connections: a port in it (free_port's, and the
    ones after it) may be taken by a client's connection before the service binds it, and a service
    that cannot bind restarts with a growing back-off (30 s and more before the stack is ready)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        base = random.randrange(10_000, low - count)
        with contextlib.ExitStack() as held:
            try:
                for port in range(base, base + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports below {low}")


def problems(spans: list[Span], services: set[str]) -> list[str]:
    """What keeps `spans` from being one complete trace through `services` (empty: nothing)."""
    ids = {s.span_id for s in spans}
    found = []
    if missing := services - {s.service for s in spans}:
        found.append(f"no spans from {sorted(missing)}")
    roots = [s for s in spans if s.parent_id is None]
    if len(roots) != 1:
        found.append(f"{len(roots)} roots: {[(r.service, r.name) for r in roots]}")
    if orphans := [s for s in spans if s.parent_id is not None and s.parent_id not in ids]:
        found.append(f"parents not in the trace: {[(o.service, o.name) for o in orphans][:5]}")
    return found


async def settled_trace(collector: OtlpCollector, ticket_id: str, services: set[str]) -> list[Span]:
    """The ticket's trace once it is complete (exporters batch: the last spans come a moment later)."""
    trace_id = format(ticket_trace_id(ticket_id), "032x")
    deadline = asyncio.get_running_loop().time() + 20
    while asyncio.get_running_loop().time() < deadline:
        spans = collector.trace(trace_id)
        if not problems(spans, services):
            return spans
        await asyncio.sleep(0.25)
    return collector.trace(trace_id)


async def test_a_tickets_spans_from_every_service_form_one_trace(
    start_stack, broker, server_database_url, topic_prefix, tmp_path: Path
):
    db = server_database_url
    collector = OtlpCollector().start()
    model, models_file = start_model_server(DEMO_SCRIPT, tmp_path / "models")
    env = {
        "AGENTBUS_OTEL_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "AGENTBUS_METRICS_EXPORT_INTERVAL_S": "1",
        "AGENTBUS_MODELS_FILE": str(models_file),
        "AGENTBUS_METRICS_PORT": str(metrics_ports(20)),  # one per process, with room to spare
    }
    try:
        async with start_stack(
            broker, db, topic_prefix, tmp_path / "s", services=SERVICES, extra_env=env
        ) as stack:
            # Submitted as an upstream system would: no trace context; intake starts the trace.
            resolved, approved = demo.refund_ticket("ORD-1001"), demo.refund_ticket("ORD-1002")
            await client.publish(stack.settings(), [client.ticket_event(t) for t in (resolved, approved)])
            rid, aid = str(resolved["ticket_id"]), str(approved["ticket_id"])
            statuses = await client.wait_for(db, [rid, aid], timeout=60)
            assert statuses == {rid: "resolved", aid: "awaiting_approval"}

            async with httpx.AsyncClient(base_url=stack.approvals_url, timeout=15) as http:
                pending = (await http.get("/approvals", headers=ALICE)).json()["approvals"]
                (approval,) = [a for a in pending if a["ticket_id"] == aid]
                answer = await http.post(f"/approvals/{approval['id']}/approve", headers=ALICE, json={})
                assert answer.status_code == 200, answer.text
            assert (await client.wait_for(db, [aid], timeout=60, until=FINAL))[aid] == "resolved"

            for tid in (rid, aid):
                spans = await settled_trace(collector, tid, PASSED)
                assert not problems(spans, PASSED), (tid, problems(spans, PASSED))
                # Every span that names a ticket is in that ticket's one trace.
                assert collector.traces_of(tid) == {format(ticket_trace_id(tid), "032x")}
                (root,) = [s for s in spans if s.parent_id is None]
                assert root.service == "agentbus-intake"
                # A span per model call, with the GenAI attributes: intake classifies, the planner plans.
                calls = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
                assert {s.service for s in calls} == {"agentbus-intake", "agentbus-planner"}
                for call in calls:
                    assert call.attributes["gen_ai.provider.name"] == "openai"
                    assert call.attributes["gen_ai.request.model"]
                    assert call.attributes["gen_ai.response.id"]
                    assert call.attributes["gen_ai.usage.input_tokens"] > 0
                    assert call.attributes["gen_ai.response.finish_reasons"]

            # The decision taken over HTTP continues the trace from policy's needs_approval decision:
            # escalation publishes approval.decided in it, and policy takes it from there.
            spans = collector.trace(format(ticket_trace_id(aid), "032x"))
            by_id = {s.span_id: s for s in spans}
            published = [
                s for s in spans if s.service == "agentbus-escalation" and "approvals.decided" in s.name
            ]
            assert published, "escalation published approval.decided outside the ticket's trace"
            assert any(by_id[p.parent_id].service == "agentbus-policy" for p in published if p.parent_id)
            consumed = [s for s in spans if s.service == "agentbus-policy" and "approvals.decided" in s.name]
            assert consumed
            # The trace sink recorded each event in the ticket's trace, below the span that published it.
            sink = [s for s in spans if s.service == "agentbus-trace-sink"]
            assert sink and all(s.parent_id and by_id[s.parent_id].service != s.service for s in sink)

            # Metrics went out over OTLP too.
            deadline = asyncio.get_running_loop().time() + 10
            wanted = {"agentbus.handler.duration", "agentbus.events.processed", "gen_ai.client.token.usage"}
            while not wanted <= collector.metric_names and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.25)
            assert wanted <= collector.metric_names

            # And on each process's Prometheus endpoint: a stage's own counts, every stage's lag
            # from the reconciler (measured when scraped, so the second scrape has it).
            assert stack.supervisor is not None
            ports = {p["service"]: p["metrics_port"] for p in stack.supervisor.describe()}
            assert len(set(ports.values())) == len(ports)
            async with httpx.AsyncClient(timeout=5) as http:
                intake = (await http.get(f"http://127.0.0.1:{ports['intake']}/metrics")).text
                assert 'agentbus_events_processed_total{event_type="ticket.received"' in intake
                deadline = asyncio.get_running_loop().time() + 15
                while True:
                    lag = (await http.get(f"http://127.0.0.1:{ports['reconciler']}/metrics")).text
                    if 'service="executor-commerce"' in lag or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.5)
                lags = [ln for ln in lag.splitlines() if ln.startswith("agentbus_consumer_lag{")]
                assert {ln.split('service="')[1].split('"')[0] for ln in lags} >= {
                    "intake",
                    "planner",
                    "policy",
                    "executor-commerce",
                    "trace-sink",
                }
    finally:
        model.stop()
        collector.stop()
