"""Trace context across a Bus hop, through FastStream's in-memory broker: a consumer continues the
producer's trace; a publish from outside any handler (the approvals API, a sweep) continues the
trace its event's envelope names, or starts the ticket's own; the envelope carries the context on."""

from __future__ import annotations

import builders
import pytest
from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.events import ApprovalDecidedV1, Event, TaskClassifiedV2, TicketReceivedV1
from agentbus.shared.settings import Settings
from agentbus.shared.telemetry import setup_tracing, ticket_trace_id
from fakes import as_every_stage
from faststream.kafka import TestKafkaBroker
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

POLICY_SPAN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def pipeline() -> tuple[Bus, InMemorySpanExporter, list[Event]]:
    """intake → planner in one Bus: tickets.received answered with task.classified, collected."""
    exporter = InMemorySpanExporter()
    settings = Settings(service="intake", topic_prefix="component.")
    bus = as_every_stage(Bus(settings, tracer_provider=setup_tracing(settings, exporter=exporter)))
    seen: list[Event] = []

    async def on_ticket(event: Event) -> list[Event]:
        return [event.answer(TaskClassifiedV2, builders.payloads()[TaskClassifiedV2], bus.producer)]

    async def on_classified(event: Event) -> list[Event]:
        seen.append(event)
        return []

    async def on_approval(event: Event) -> list[Event]:
        seen.append(event)
        return []

    bus.subscribe(topics.TICKETS_RECEIVED, on_ticket)
    bus.subscribe(topics.TASKS_CLASSIFIED, on_classified)
    bus.subscribe(topics.APPROVALS_DECIDED, on_approval)
    return bus, exporter, seen


def linked(spans: tuple[ReadableSpan, ...]) -> bool:
    """One trace in which every span but one root has its parent."""
    ids = {s.context.span_id for s in spans}
    roots = [s for s in spans if s.parent is None]
    return (
        len({s.context.trace_id for s in spans}) == 1
        and all(s.parent is None or s.parent.span_id in ids for s in spans)
        and len(roots) <= 1
    )


async def test_a_ticket_published_outside_any_trace_gets_its_own_trace_across_the_hop(pipeline):
    bus, exporter, seen = pipeline
    ticket = builders.event(TicketReceivedV1, ticket_id="T-TRACE-1")
    async with TestKafkaBroker(bus.broker):
        await bus.publish(ticket)

    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {ticket_trace_id("T-TRACE-1")}
    assert linked(spans)
    processed = {s.name.removeprefix("component."): s for s in spans if s.name.endswith(" process")}
    assert set(processed) == {"agentbus.tickets.received.v1 process", "agentbus.tasks.classified.v1 process"}
    # The answer's envelope names the span of the handler that produced it.
    (classified,) = seen
    intake = processed["agentbus.tickets.received.v1 process"]
    trace_id, span_id = ticket_trace_id("T-TRACE-1"), intake.context.span_id
    assert classified.traceparent == f"00-{trace_id:032x}-{span_id:016x}-01"
    assert intake.attributes["agentbus.ticket_id"] == "T-TRACE-1"


async def test_a_decision_published_outside_a_handler_continues_the_trace_in_its_envelope(pipeline):
    bus, exporter, seen = pipeline
    decided = builders.event(ApprovalDecidedV1, traceparent=POLICY_SPAN)
    async with TestKafkaBroker(bus.broker):
        await bus.publish(decided)  # as the approvals API does, with no span of its own

    spans = exporter.get_finished_spans()
    assert {f"{s.context.trace_id:032x}" for s in spans} == {"0af7651916cd43dd8448eb211c80319c"}
    # The first span of the publish hangs below the span the envelope names; the rest below it.
    outside = [s for s in spans if s.parent is not None and s.parent.span_id == 0xB7AD6B7169203331]
    assert len(outside) == 1 and outside[0].parent is not None and outside[0].parent.is_remote
    ids = {s.context.span_id for s in spans} | {0xB7AD6B7169203331}
    assert all(s.parent is not None and s.parent.span_id in ids for s in spans)
    assert seen[0].traceparent == POLICY_SPAN  # the envelope kept the context it came with
