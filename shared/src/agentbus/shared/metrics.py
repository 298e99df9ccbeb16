"""OpenTelemetry metrics: one global MeterProvider per service process, read over OTLP and/or served
on a Prometheus endpoint; the bus's own instruments (per-stage latency, events processed and
dead-lettered) and the consumer-lag gauge.

Code anywhere in the process registers instruments with the plain API
(`opentelemetry.metrics.get_meter(...)`); they appear on every reader configured here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

from .settings import Settings
from .telemetry import service_resource

log = logging.getLogger("agentbus.metrics")

METER = "agentbus"

# Seconds; a stage answers in milliseconds, a model call or a slow tool in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def setup_metrics(settings: Settings, *, readers: Iterable[MetricReader] = ()) -> MeterProvider:
    """The process's MeterProvider, made global on the first call: an OTLP reader when
    AGENTBUS_OTEL_EXPORTER=otlp, a Prometheus endpoint on AGENTBUS_METRICS_PORT when set, plus
    `readers` (tests). Later calls return the same provider."""
    global _provider
    if _provider is not None:
        return _provider
    all_readers = list(readers)
    if settings.otel_exporter == "otlp":
        # Endpoint and headers from the standard OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        all_readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(), export_interval_millis=settings.metrics_export_interval_s * 1000
            )
        )
    if settings.metrics_port is not None:
        all_readers.append(prometheus_reader(settings.metrics_host, settings.metrics_port))
    _provider = MeterProvider(resource=service_resource(settings), metric_readers=all_readers)
    metrics.set_meter_provider(_provider)
    return _provider


def prometheus_reader(host: str, port: int) -> MetricReader:
    """A reader whose metrics prometheus-client serves at http://host:port/metrics."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    # service.name as a label: each process has its own endpoint, but dashboards sum over them.
    reader = PrometheusMetricReader(resource_attribute_filter=lambda key: key == "service.name")
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return reader


class BusMetrics:
    """What every consumer records: how long each handler took, and what became of each event."""

    def __init__(self, service: str) -> None:
        meter = metrics.get_meter(METER)
        self.service = service
        self.duration = meter.create_histogram(
            "agentbus.handler.duration",
            unit="s",
            description="Time a stage took over one event (or batch), publishing its outputs included",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.processed = meter.create_counter(
            "agentbus.events.processed", description="Events a stage consumed and settled, by outcome"
        )
        self.dead_lettered = meter.create_counter(
            "agentbus.events.dead_lettered", description="Events a stage sent to the dead-letter topic"
        )

    def handled(self, topic: str, event_type: str, outcome: str, seconds: float | None) -> None:
        """`outcome`: ok, retry (will be redelivered), dead_lettered, or skipped (not for this stage)."""
        attrs = {"service": self.service, "topic": topic, "event_type": event_type, "outcome": outcome}
        if seconds is not None:
            self.duration.record(seconds, attrs)
        if outcome != "retry":
            self.processed.add(1, attrs)

    def dead_letter(self, topic: str, kind: str) -> None:
        self.dead_lettered.add(1, {"service": self.service, "topic": topic, "reason": kind})


class LagGauge:
    """`agentbus.consumer.lag` per service, measured when a reader collects (a Prometheus scrape, an
    OTLP export), not on a timer: a collection gets the last measurement and starts the next one on
    the service's event loop, at most every `min_interval_s`."""

    def __init__(
        self, settings: Settings, services: list[str], loop: asyncio.AbstractEventLoop, min_interval_s: float
    ) -> None:
        from .lag import LagProbe

        self.probe = LagProbe(settings)
        self.services = services
        self.loop = loop
        self.min_interval_s = min_interval_s
        self.values: dict[str, int] = {}
        self._started = False
        self._busy = False
        self._last = float("-inf")
        metrics.get_meter(METER).create_observable_gauge(
            "agentbus.consumer.lag",
            callbacks=[self.observe],
            unit="{message}",
            description="Messages on a service's topics that its consumer groups have not committed",
        )

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # Called from the reader's thread: the measurement itself runs on the event loop.
        if not self._busy and time.monotonic() - self._last >= self.min_interval_s:
            self._busy = True
            asyncio.run_coroutine_threadsafe(self.refresh(), self.loop)
        return [Observation(n, {"service": s}) for s, n in dict(self.values).items()]

    async def refresh(self) -> None:
        try:
            if not self._started:
                await self.probe.start()
                self._started = True
            lag = await self.probe.measure(self.services)
            self.values = {s: n for s, n in lag.items() if n is not None}
        except Exception as exc:  # the broker may be away; the next collection tries again
            log.warning("could not measure consumer lag: %r", exc)
        finally:
            self._last = time.monotonic()
            self._busy = False

    async def close(self) -> None:
        if self._started:
            await self.probe.stop()
            self._started = False


_provider: MeterProvider | None = None
