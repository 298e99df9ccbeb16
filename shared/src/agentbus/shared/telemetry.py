"""OpenTelemetry set-up: one tracer provider per service process, exporter chosen by settings."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from .settings import Settings


def setup_tracing(settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider:
    """Build the service's tracer provider; `exporter` overrides settings (tests pass an in-memory one)."""
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": f"agentbus-{settings.service}",
                "service.instance.id": settings.instance,
            }
        )
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.otel_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif settings.otel_exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # the OTLP exporter is an optional extra
            raise RuntimeError(
                "AGENTBUS_OTEL_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http installed"
            ) from exc
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    global _global_set
    if not _global_set:  # OpenTelemetry allows one global provider per process
        trace.set_tracer_provider(provider)
        _global_set = True
    return provider


_global_set = False
