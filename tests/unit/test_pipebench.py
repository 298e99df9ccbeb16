"""The pure parts of `agentbus bench`: hop counting from the topic map, the ticket plan, latency
percentiles, ratios and their verdicts against DESIGN §8, the printed table."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from agentbus.cli import pipebench, pipepath, pipeprocs
from agentbus.cli.pipeload import Message, PhaseRun, send_in_lanes
from agentbus.cli.pipereport import (
    BenchReport,
    Handler,
    Latency,
    Process,
    Side,
    Sink,
    Stage,
    Target,
    num,
    ratio,
    short_topic,
)
from agentbus.cli.relay import Relay
from agentbus.shared import topics
from agentbus.shared.settings import Settings


def test_hops_follow_the_topic_map():
    # received → intake → classified → planner → (proposed → policy → decided → executor → executed
    # → verifier → verified → planner) per action → finished.
    assert pipepath.hops(1) == 6
    assert pipepath.hops(5) == 22
    assert pipepath.WORKFLOW_ACTIONS == {"refunds": 5, "it_access": 4}
    path = pipepath.ticket_path(2)
    assert path[0] == topics.TICKETS_RECEIVED and path[-1] == topics.TASKS_FINISHED
    with pytest.raises(ValueError):
        pipepath.ticket_path(0)


def test_each_stage_is_the_one_service_that_moves_the_ticket_on():
    assert pipepath.stage_service(topics.ACTIONS_DECIDED, topics.ACTIONS_EXECUTED) == "executor"
    assert pipepath.stage_service(topics.ACTIONS_VERIFIED, topics.TASKS_FINISHED) == "planner"
    with pytest.raises(LookupError):
        pipepath.stage_service(topics.TICKETS_RECEIVED, topics.ACTIONS_EXECUTED)
    assert [s[2] for s in pipepath.stages()] == [
        "intake",
        "planner",
        "policy",
        "executor",
        "verifier",
        "planner",
        "planner",
    ]


def test_plan_spreads_the_mix_and_keeps_tenants_inside_their_quotas():
    tickets = pipebench.plan("ABC123", "M", 100, 0.5, 10**9, 2 * 10**9)
    assert sum(t.workflow == "it_access" for t in tickets) == 50
    assert {t.workflow for t in tickets[:2]} == {"refunds", "it_access"}  # interleaved, not in blocks
    per_tenant: dict[str, int] = {}
    for t in tickets:
        per_tenant[t.tenant_id] = per_tenant.get(t.tenant_id, 0) + 1
    assert max(per_tenant.values()) <= pipebench.TICKETS_PER_TENANT
    # One directory user per tenant, in that tenant; one order per refund.
    users = {t.tenant_id: t.subject_id for t in tickets if t.workflow == "it_access"}
    assert len(set(users.values())) == len(users)
    orders = [t.subject_id for t in tickets if t.workflow == "refunds"]
    assert len(set(orders)) == len(orders) and all(o.startswith("ORD-") for o in orders)
    # The relay's twin has an id of the same length: the same bytes to parse.
    assert all(len(t.relay_id) == len(t.ticket_id) != 0 and t.relay_id != t.ticket_id for t in tickets)
    assert len({t.ticket_id for t in tickets}) == 100


def test_the_relay_message_is_the_ticket_event_the_pipeline_gets():
    ticket = pipebench.plan("ABC123", "F", 2, 0.5, 10**9, 2 * 10**9)[1]
    pipeline = pipebench.ticket_message("t.received", ticket)
    relayed = pipebench.ticket_message("t.relay", ticket, ticket.relay_id)
    assert relayed.key == ticket.relay_id and pipeline.key == ticket.ticket_id
    assert abs(len(relayed.value) - len(pipeline.value)) <= 2  # uuid7 and timestamp digits may differ


def test_a_message_of_fewer_hops_enters_the_relay_later():
    relay = Relay(Settings(topic_prefix="p."), hops=22, state_dir=Path("."))
    assert relay.entry_topic(22) == relay.topic(0) == "p.agentbus.bench.relay.00"
    assert relay.entry_topic(18) == relay.topic(4)
    assert relay.last_topic == "p.agentbus.bench.relay.22"
    with pytest.raises(ValueError):
        relay.entry_topic(23)


def test_latency_percentiles_interpolate_like_postgres():
    lat = Latency.of([0.4, 0.1, 0.3, 0.2, 0.5])
    assert (lat.count, lat.p50, lat.max) == (5, 0.3, 0.5)
    assert lat.p95 == pytest.approx(0.48)
    assert Latency.of([]) == Latency(0, None, None, None, None)


def test_phase_throughput_and_latency_from_send_and_end_times():
    run = PhaseRun("max", None, sent={"a": 10.0, "b": 10.5}, ended={"a": 10.2, "b": 12.0})
    assert run.latencies_s == pytest.approx([0.2, 1.5])
    assert run.throughput == pytest.approx(1.0)  # 2 tickets from 10.0 to 12.0
    assert run.missing == 0


def test_targets_say_meets_or_misses():
    assert Target("t", 0.6, 0.5, at_least=True).verdict == "meets"
    assert Target("t", 0.4, 0.5, at_least=True).verdict == "MISSES"
    assert Target("p95", 1.5, 1.5, at_least=False).verdict == "meets"
    assert Target("lag", 1.0, 1.0, at_least=False, strict=True).verdict == "MISSES"
    assert Target("t", None, 0.5, at_least=True).verdict == "n/a"
    assert Target("lag", 0.2, 1.0, at_least=False, strict=True).bound_text(" s") == "< 1 s"
    assert ratio(1.0, 0.0) is None and ratio(None, 2.0) is None and ratio(3.0, 2.0) == 1.5


def report(
    pipeline_tput: float = 10.0, pipeline_p95: float = 0.3, sink_rate: float = 25_000.0
) -> BenchReport:
    def side(tput: float, p95: float) -> Side:
        lat = Latency(100, p95 / 2, p95, p95 * 1.2, p95 * 1.5)
        return Side(100, 100, tput, lat, 5.0, 100, 5.0, lat)

    lat = Latency(10, 0.01, 0.02, 0.03, 0.04)
    return BenchReport(
        tickets=100,
        mix={"refunds": 50, "it_access": 50},
        hops={"refunds": 22, "it_access": 18},
        observed_hops={"refunds": [22], "it_access": [18]},
        relay_hops=22,
        outcomes={"resolved": 200},
        pipeline=side(pipeline_tput, pipeline_p95),
        relay=side(40.0, 0.1),
        stages=[Stage("ticket.received", "task.classified", "intake", lat, lat)],
        handlers=[Handler("policy", "agentbus.actions.proposed.v1", 250, 0.19, 0.98, 250, 0.05, 0.4)],
        sink=Sink(lat, lat, 20_000, 900.0, sink_rate, 1.2, {"trace-sink": 2.0, "postgres": 1.0}),
        processes=[Process("intake", 90.0, 3.0, 2.0), Process("planner", 160.0, 9.0, 5.0)],
        relay_processes=[Process("relay-00", 40.0, 0.5, 0.4, service=False)],
        relay_infrastructure=[Process("broker (tansu)", None, 1.0, 1.0, service=False)],
    )


def test_the_table_shows_both_sides_the_ratios_and_their_targets():
    text = "\n".join(report().render())
    tput = next(line for line in text.splitlines() if line.startswith("max rate: throughput"))
    assert tput.split()[4:] == ["10.0", "40.0", "0.25", "≥", "0.5", "MISSES"]
    p95 = [line for line in text.splitlines() if "e2e p95" in line][1]  # the fixed-rate one
    assert p95.split()[-4:] == ["3.00", "≤", "1.5", "MISSES"]
    assert "intake    ticket.received → task.classified" in text
    handler = next(line for line in text.splitlines() if line.startswith("  policy"))
    assert handler.split() == ["policy", "actions.proposed", "250", "190", "98%", "50.0", "40%"]
    assert "sink CPU 0.10 ms/event" in text
    assert "short of DESIGN §8: throughput pipeline/relay 0.25" in text
    assert "peak RSS planner (MB) 160.00 (target ≤ 150)" in text
    assert "peak RSS intake" not in text.splitlines()[-1]


def test_a_run_that_meets_every_target_says_so():
    good = report(pipeline_tput=30.0, pipeline_p95=0.12)
    good.processes = [Process("intake", 90.0, 3.0, 2.0)]
    assert good.shortfalls() == []
    assert good.render()[-1].startswith("every DESIGN §8 target measured here is met")
    assert {t["name"]: t["ok"] for t in good.as_json()["targets"]}["trace sink events/s"] is True


def test_numbers_are_printed_by_magnitude():
    assert (num(None), num(0.1234), num(12.34), num(1234.5)) == ("-", "0.12", "12.3", "1,234")
    assert num(0.0123, 1000) == "12.3"


def test_vmhwm_is_read_from_proc_status():
    assert pipeprocs.parse_vmhwm_kb("Name:\tpython\nVmPeak:\t  9 kB\nVmHWM:\t  153600 kB\n") == 153600
    assert pipeprocs.parse_vmhwm_kb("Name:\tkthreadd\n") is None
    used = pipeprocs.cpu_used({"a": {1: 1.0, 2: 5.0}}, {"a": {1: 3.0, 3: 0.5}})
    assert used == {"a": pytest.approx(2.5)}  # pid 2 gone, pid 3 new: counted in full


def test_handler_times_are_read_from_a_prometheus_scrape():
    scrape = "\n".join(
        [
            "# TYPE agentbus_handler_duration_seconds histogram",
            'agentbus_handler_duration_seconds_bucket{le="0.1",outcome="ok",topic="agentbus.a.v1"} 2.0',
            'agentbus_handler_duration_seconds_count{outcome="ok",topic="agentbus.a.v1"} 3.0',
            'agentbus_handler_duration_seconds_sum{outcome="ok",topic="agentbus.a.v1"} 0.5',
            'agentbus_handler_duration_seconds_count{outcome="retry",topic="agentbus.a.v1"} 1.0',
            'agentbus_handler_duration_seconds_sum{outcome="retry",topic="agentbus.a.v1"} 0.25',
            "# TYPE agentbus_events_processed counter",
            'agentbus_events_processed_total{topic="agentbus.a.v1"} 9.0',
        ]
    )
    assert pipeprocs.handler_totals(scrape) == {"agentbus.a.v1": (0.75, 4.0)}
    assert short_topic("agentbus.actions.proposed.v1") == "actions.proposed"
    assert short_topic("*") == "*"


async def test_lanes_keep_one_record_in_flight_per_partition():
    """Tansu counts a partition's end in batches: the load must never put two records in one."""

    class Producer:
        def __init__(self) -> None:
            self.in_flight: set[int] = set()
            self.sent: list[tuple[int, str]] = []

        async def send_and_wait(self, topic: str, value: bytes, *, key: bytes, partition: int, headers: Any):
            assert partition not in self.in_flight, "two records in flight on one partition"
            self.in_flight.add(partition)
            await asyncio.sleep(0.001)
            self.in_flight.discard(partition)
            self.sent.append((partition, key.decode()))

    producer = Producer()
    builds = [partial(Message, "t", f"k{n}", b"v") for n in range(10)]
    await send_in_lanes(producer, builds, 4)  # type: ignore[arg-type]
    assert sorted(producer.sent) == sorted((n % 4, f"k{n}") for n in range(10))
    assert [k for p, k in producer.sent if p == 1] == ["k1", "k5", "k9"]  # in order within a lane
