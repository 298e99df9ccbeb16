"""OpenTelemetry tracing: one tracer provider per service process, and one trace per ticket.

A ticket's trace follows its events through Kafka headers (faststream's telemetry middleware) and
through the event envelope's `traceparent`, which survives where headers do not: an approval
decided over HTTP hours later, a re-drive from the audit store. A ticket that arrives with neither
starts a trace whose id is derived from its ticket id, so a stage that meets one of its events
without context still lands in the same trace.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .settings import Settings

_PROPAGATOR = TraceContextTextMapPropagator()

# The ticket whose trace a root span started now belongs to (read by TicketIdGenerator).
_root_ticket: ContextVar[str | None] = ContextVar("agentbus_root_ticket", default=None)


def ticket_trace_id(ticket_id: str) -> int:
    """The trace id of a ticket's trace: 128 bits of a hash of its id (never 0, which is invalid)."""
    digest = hashlib.sha256(f"agentbus-ticket:{ticket_id}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1


class TicketIdGenerator(RandomIdGenerator):
    """Random ids, except the trace id of a root span started under `ticket_root`: the ticket's."""

    def generate_trace_id(self) -> int:
        ticket = _root_ticket.get()
        return ticket_trace_id(ticket) if ticket else super().generate_trace_id()

    def is_trace_id_random(self) -> bool:
        # W3C's random-trace-id flag: a derived id is a hash, not drawn at random.
        return _root_ticket.get() is None


@contextlib.contextmanager
def ticket_root(ticket_id: str | None) -> Iterator[None]:
    """Root spans started inside get the ticket's trace id (spans with a parent keep the parent's)."""
    token = _root_ticket.set(ticket_id)
    try:
        yield
    finally:
        _root_ticket.reset(token)


def has_active_span() -> bool:
    return trace.get_current_span().get_span_context().is_valid


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, if any."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def continued(traceparent: str | None, ticket_id: str | None) -> Iterator[None]:
    """Make `traceparent` (an event's) the current context when no span is active, so spans started
    inside join the ticket's trace; without one, a root span there gets the ticket's trace id."""
    if has_active_span():
        yield
        return
    ctx = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    if ctx is not None and trace.get_current_span(ctx).get_span_context().is_valid:
        token = otel_context.attach(ctx)
        try:
            yield
        finally:
            otel_context.detach(token)
        return
    with ticket_root(ticket_id):
        yield


class TextKeys(SpanProcessor):
    """Bytes attributes as text. FastStream records a Kafka record's key (here the ticket id) as
    bytes: trace UIs show it as base64, and the console exporter cannot serialise it at all."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        for name, value in list((span.attributes or {}).items()):
            if isinstance(value, bytes):
                span.set_attribute(name, value.decode("utf-8", "replace"))


def setup_tracing(settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider:
    """Build the service's tracer provider; `exporter` overrides settings (tests pass an in-memory one)."""
    global _provider
    if _provider is not None and exporter is None:
        return _provider  # one per process: every Bus and helper shares it
    provider = TracerProvider(resource=service_resource(settings), id_generator=TicketIdGenerator())
    export: SpanProcessor | None = None
    if exporter is not None:
        export = SimpleSpanProcessor(exporter)
    elif settings.otel_exporter == "console":
        export = BatchSpanProcessor(ConsoleSpanExporter())
    elif settings.otel_exporter == "otlp":
        # Endpoint and headers from the standard OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Short delay: a service may be stopped soon after a ticket passed.
        export = BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=1000)
    if export is not None:  # with nothing exported, no span needs its keys as text
        provider.add_span_processor(TextKeys())
        provider.add_span_processor(export)
    if _provider is None:  # OpenTelemetry allows one global provider per process
        trace.set_tracer_provider(provider)
        _provider = provider
    return provider


def service_resource(settings: Settings) -> Resource:
    return Resource.create(
        {"service.name": f"agentbus-{settings.service}", "service.instance.id": settings.instance}
    )


_provider: TracerProvider | None = None
