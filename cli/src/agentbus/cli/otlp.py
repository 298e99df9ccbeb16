"""Audit rows as OTLP log records (resource service.name=agentbus-audit): OTLP/JSON lines, or OTLP/HTTP
to a collector through the OpenTelemetry exporter."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from google.protobuf import json_format
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .audit import OTLP_BATCH

# Resource.create also takes OTEL_RESOURCE_ATTRIBUTES, so a deployment can add its own (e.g. env).
RESOURCE = Resource.create({"service.name": "agentbus-audit"})
SCOPE = InstrumentationScope("agentbus.audit.export", "1")
BATCH = OTLP_BATCH  # records per request; one OTLP/JSON line holds one request
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INT64 = range(-(2**63), 2**63)
_PROPAGATOR = TraceContextTextMapPropagator()


def log_record(row: Mapping[str, Any]) -> ReadableLogRecord:
    """One audit row (an EXPORT row of cli/audit.py): the event as body, its chain link and Kafka
    coordinates as attributes, its trace from the event's traceparent."""
    event = row["event"]
    attributes: dict[str, Any] = {
        "agentbus.position": row["position"],
        "agentbus.hash": row["hash"].hex() if row["hash"] else "",
        "agentbus.prev_hash": row["prev_hash"].hex() if row["prev_hash"] else "",
        "agentbus.chain_version": row["chain_version"],
        "agentbus.event_id": row["event_id"],
        "agentbus.event.type": row["type"],
        "agentbus.event.version": row["version"],
        "messaging.system": "kafka",
        "messaging.destination.name": row["topic"],
        "messaging.destination.partition.id": str(row["kafka_partition"]),
        "messaging.kafka.offset": row["kafka_offset"],
    }
    # OTLP attributes cannot be null: an absent ticket or tenant is left out.
    if row["ticket_id"] is not None:
        attributes["agentbus.ticket_id"] = row["ticket_id"]
    if row["tenant_id"] is not None:
        attributes["agentbus.tenant_id"] = row["tenant_id"]
    if row["event_digest"] is not None:
        attributes["agentbus.event_digest"] = row["event_digest"].hex()
    if event is None:
        attributes["agentbus.purged"] = True  # retention removed the body; the digest still links it
    traceparent = event.get("traceparent") if isinstance(event, Mapping) else None
    context = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    record = LogRecord(
        timestamp=_nanos(row["occurred_at"]),
        observed_timestamp=_nanos(row["recorded_at"]),
        context=context,
        severity_text="INFO",
        severity_number=SeverityNumber.INFO,
        body=_value(event),
        attributes=attributes,
        event_name=row["type"],
    )
    return ReadableLogRecord(record, RESOURCE, SCOPE)


def json_line(batch: Sequence[ReadableLogRecord]) -> bytes:
    """One ExportLogsServiceRequest in OTLP/JSON: the protobuf message the HTTP exporter would send,
    in proto3 JSON with integer enums, and trace and span ids in hex as OTLP/JSON requires (proto3
    JSON writes bytes in base64)."""
    message = json_format.MessageToDict(encode_logs(batch), use_integers_for_enums=True)
    for resource_logs in message.get("resourceLogs", []):
        for scope_logs in resource_logs.get("scopeLogs", []):
            for record in scope_logs.get("logRecords", []):
                for key in ("traceId", "spanId"):
                    if key in record:
                        record[key] = base64.b64decode(record[key]).hex()
    return orjson.dumps(message) + b"\n"


def logs_endpoint(url: str) -> str | None:
    """The OTLP/HTTP logs URL for a collector address: /v1/logs is added when the URL has no path.
    None when it is not an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1/logs")
    return urlunsplit(parts)


class Collector:
    """POSTs batches to an OTLP/HTTP endpoint (protobuf). Headers come from OTEL_EXPORTER_OTLP_HEADERS
    or OTEL_EXPORTER_OTLP_LOGS_HEADERS, as for any OpenTelemetry exporter; transient failures are
    retried by the exporter."""

    def __init__(self, endpoint: str, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.exporter = OTLPLogExporter(endpoint=endpoint, timeout=timeout_s)

    def send(self, batch: Sequence[ReadableLogRecord]) -> bool:
        return self.exporter.export(batch) == LogRecordExportResult.SUCCESS

    def close(self) -> None:
        self.exporter.shutdown()


def _nanos(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND * 1000


def _value(value: Any) -> Any:
    """A JSON value as an OTLP AnyValue can hold it: integers beyond int64 become their decimal text."""
    if isinstance(value, Mapping):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return str(value)
    return value
