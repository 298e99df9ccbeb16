"""Tracing pieces: the ticket's derived trace id, continuing an envelope's trace, a root for a record
without context, the trace sink's per-record spans, and the GenAI span of a model call."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from agentbus.cli.model_server import ScriptedModelServer
from agentbus.shared.bus import Bus, TicketRootMiddleware
from agentbus.shared.llm import ModelClient, ModelUnavailable
from agentbus.shared.llm.config import Endpoint
from agentbus.shared.llm.genai import request_attributes, response_attributes
from agentbus.shared.redrive import StoredEvent
from agentbus.shared.redrive import record as record_args
from agentbus.shared.settings import Settings
from agentbus.shared.telemetry import TicketIdGenerator, continued, setup_tracing, ticket_trace_id
from aiokafka import ConsumerRecord
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv.trace import SpanAttributes
from opentelemetry.trace import format_trace_id

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def tracer() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=TicketIdGenerator())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


@pytest.fixture
def global_spans() -> Iterator[InMemorySpanExporter]:
    """Spans of the process's global provider (the one ModelClient and the redriver use)."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    setup_tracing(Settings(service="unit")).add_span_processor(processor)
    yield exporter
    processor.shutdown()


def record(key: bytes | None, headers: list[tuple[str, bytes]]) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("t.agentbus.actions.decided.v1", 2, 7, 0, 0, key, b"{}", None, 2, 2, headers)


def test_a_tickets_trace_id_is_derived_from_its_id():
    assert ticket_trace_id("T-1") == ticket_trace_id("T-1") != ticket_trace_id("T-2")
    assert 0 < ticket_trace_id("T-1") < 2**128


def test_continued_joins_the_envelopes_trace_or_starts_the_tickets(tracer):
    tr, exporter = tracer
    with continued(TRACEPARENT, "T-1"):
        tr.start_span("from envelope").end()
    with continued(None, "T-1"):
        tr.start_span("no context").end()
    with tr.start_as_current_span("handler"), continued(TRACEPARENT, "T-1"):
        tr.start_span("inside a handler").end()
    spans = {s.name: s for s in exporter.get_finished_spans()}

    joined = spans["from envelope"]
    assert format_trace_id(joined.context.trace_id) == "0af7651916cd43dd8448eb211c80319c"
    assert joined.parent is not None and joined.parent.span_id == 0xB7AD6B7169203331
    root = spans["no context"]
    assert root.parent is None and root.context.trace_id == ticket_trace_id("T-1")
    assert not root.context.trace_flags.random_trace_id  # a hash, not a random draw
    inner = spans["inside a handler"]  # a handler's own span wins over the envelope
    assert inner.parent is not None and inner.parent.span_id == spans["handler"].context.span_id


async def test_a_record_without_context_roots_its_tickets_trace(tracer):
    tr, exporter = tracer

    class Msg:
        def __init__(self, raw: ConsumerRecord[Any, Any]) -> None:
            self.raw_message = raw

    async def handle(msg: Msg) -> None:
        tr.start_span(f"handle {msg.raw_message.key!r}").end()

    middleware = TicketRootMiddleware(None, context=None)  # type: ignore[arg-type]
    await middleware.consume_scope(handle, Msg(record(b"T-7", [])))
    await middleware.consume_scope(handle, Msg(record(b"T-8", [("traceparent", TRACEPARENT.encode())])))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["handle b'T-7'"].context.trace_id == ticket_trace_id("T-7")
    # With context, the telemetry middleware continues it; this one leaves the ids alone.
    assert spans["handle b'T-8'"].context.trace_id != ticket_trace_id("T-8")


def test_the_console_exporter_prints_a_span_with_a_kafka_key_and_shows_the_key_as_text():
    # FastStream records the record's key as bytes, which the console exporter could not serialise.
    out = io.StringIO()
    settings = Settings(service="planner")
    tracer = setup_tracing(settings, exporter=ConsoleSpanExporter(out=out)).get_tracer("test")
    tracer.start_span("process", attributes={SpanAttributes.MESSAGING_KAFKA_MESSAGE_KEY: b"T-1"}).end()
    printed = json.loads(out.getvalue())
    assert printed["name"] == "process"
    assert printed["attributes"][SpanAttributes.MESSAGING_KAFKA_MESSAGE_KEY] == "T-1"


def test_the_trace_sink_records_each_event_below_the_span_that_published_it():
    exporter = InMemorySpanExporter()
    settings = Settings(service="trace-sink")
    bus = Bus(settings, tracer_provider=setup_tracing(settings, exporter=exporter))
    span = bus._record_span(
        record(b"T-1", [("type", b"action.decided"), ("traceparent", TRACEPARENT.encode())])
    )
    assert span is not None
    span.end()
    (done,) = exporter.get_finished_spans()
    assert format_trace_id(done.context.trace_id) == "0af7651916cd43dd8448eb211c80319c"
    assert done.parent is not None and done.parent.span_id == 0xB7AD6B7169203331
    assert done.attributes is not None and done.attributes["messaging.kafka.message.offset"] == 7
    # A ticket as upstream sent it: the stage acting on it roots the trace, not the sink.
    assert bus._record_span(record(b"T-1", [("type", b"ticket.received")])) is None


def test_genai_attributes_from_a_chat_completion():
    request = {"model": "small-1", "messages": [], "temperature": 0}
    assert request_attributes("http://127.0.0.1:8765/v1", request) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "small-1",
        "gen_ai.request.temperature": 0.0,
        "server.address": "127.0.0.1",
        "server.port": 8765,
    }
    response = openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "small-1-2025",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }
    )
    assert response_attributes(response) == {
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.model": "small-1-2025",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
    }


SCRIPT = {
    "scenario": [
        {"name": "broken", "match": "BROKEN", "turn": [{"status": 500}]},
        {"name": "hello", "match": "hello", "draft": "hello to you"},
    ]
}


async def test_each_model_call_is_a_span_with_genai_attributes(global_spans):
    with ScriptedModelServer(SCRIPT) as server:
        client = ModelClient(Endpoint(base_url=server.base_url, max_retries=0))
        completion = await client.complete("small-1", [{"role": "user", "content": "hello"}])
        with pytest.raises(ModelUnavailable):
            tool = {"type": "function", "function": {"name": "orders__get_order", "parameters": {}}}
            await client.complete("small-1", [{"role": "user", "content": "BROKEN"}], [tool])
        await client.close()

    ok, failed = [s for s in global_spans.get_finished_spans() if s.name == "chat small-1"]
    assert ok.kind.name == "CLIENT" and ok.attributes is not None
    assert ok.attributes["gen_ai.operation.name"] == "chat"
    assert ok.attributes["gen_ai.request.model"] == "small-1"
    assert ok.attributes["gen_ai.response.id"].startswith("chatcmpl-scripted-")
    assert ok.attributes["gen_ai.usage.input_tokens"] == completion.prompt_tokens > 0
    assert ok.attributes["gen_ai.usage.output_tokens"] == completion.completion_tokens > 0
    assert ok.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert failed.status.status_code.name == "ERROR" and failed.attributes is not None
    assert failed.attributes["error.type"] == "InternalServerError"


def test_a_redriven_record_carries_the_redrive_span_else_the_envelopes_context(global_spans):
    stored = StoredEvent(1, "action.decided", "T-1", {"version": 1, "traceparent": TRACEPARENT})

    def sent_traceparent() -> str:
        return dict(record_args(stored, [])["headers"])["traceparent"].decode()

    assert sent_traceparent() == TRACEPARENT  # no span (the CLI without tracing): as stored
    tracer = trace.get_tracer("test")
    with continued(TRACEPARENT, "T-1"), tracer.start_as_current_span("redrive action.decided") as span:
        header = sent_traceparent()
    assert header.split("-")[1] == "0af7651916cd43dd8448eb211c80319c"  # the ticket's trace
    assert header.split("-")[2] == format(span.get_span_context().span_id, "016x")
