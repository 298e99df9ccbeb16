"""Audit rows as OTLP log records: attributes, timestamps, trace context and OTLP/JSON encoding (no I/O;
the HTTP path against a real receiver is in tests/integration/test_audit_otlp_export.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from agentbus.cli import otlp

OCCURRED = datetime(2026, 11, 21, 9, 30, 0, 123456, tzinfo=UTC)
RECORDED = datetime(2026, 11, 21, 9, 30, 1, tzinfo=UTC)


def row(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "position": 7,
        "hash": bytes([1]) * 32,
        "prev_hash": bytes([2]) * 32,
        "chain_version": 2,
        "event_digest": bytes([3]) * 32,
        "event_id": "e-7",
        "type": "ticket.received",
        "version": 1,
        "ticket_id": "T-1",
        "tenant_id": "acme",
        "topic": "agentbus.tickets.received.v1",
        "kafka_partition": 2,
        "kafka_offset": 41,
        "occurred_at": OCCURRED,
        "recorded_at": RECORDED,
        "event": {
            "event_id": "e-7",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "payload": {"big": 2**64 - 1, "small": -(2**63), "list": [1, None, "x"], "ok": True},
        },
    }
    return data | overrides


def test_an_audit_row_becomes_one_json_log_record_with_its_link_and_trace() -> None:
    line = otlp.json_line([otlp.log_record(row())])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    [resource_logs] = orjson.loads(line)["resourceLogs"]
    resource = {a["key"]: a["value"] for a in resource_logs["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "agentbus-audit"}
    [record] = resource_logs["scopeLogs"][0]["logRecords"]
    assert record["timeUnixNano"] == "1795253400123456000"
    assert record["observedTimeUnixNano"] == "1795253401000000000"
    assert record["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"  # hex, as OTLP/JSON wants
    assert record["spanId"] == "00f067aa0ba902b7"
    assert record["eventName"] == "ticket.received"
    attributes = {a["key"]: a["value"] for a in record["attributes"]}
    assert attributes["agentbus.position"] == {"intValue": "7"}
    assert attributes["agentbus.hash"] == {"stringValue": "01" * 32}
    assert attributes["agentbus.prev_hash"] == {"stringValue": "02" * 32}
    assert attributes["agentbus.tenant_id"] == {"stringValue": "acme"}
    assert attributes["messaging.destination.partition.id"] == {"stringValue": "2"}
    assert attributes["messaging.kafka.offset"] == {"intValue": "41"}
    assert "agentbus.purged" not in attributes
    payload = {kv["key"]: kv["value"] for kv in record["body"]["kvlistValue"]["values"]}["payload"]
    fields = {kv["key"]: kv["value"] for kv in payload["kvlistValue"]["values"]}
    # OTLP integers are int64: a larger JSON integer travels as its decimal text.
    assert fields["big"] == {"stringValue": str(2**64 - 1)}
    assert fields["small"] == {"intValue": str(-(2**63))}
    assert fields["list"] == {"arrayValue": {"values": [{"intValue": "1"}, {}, {"stringValue": "x"}]}}


def test_a_purged_row_has_no_body_and_says_so_and_a_row_without_trace_has_no_ids() -> None:
    line = otlp.json_line([otlp.log_record(row(event=None, ticket_id=None))])
    [record] = orjson.loads(line)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    attributes = {a["key"]: a["value"] for a in record["attributes"]}
    assert attributes["agentbus.purged"] == {"boolValue": True}
    assert attributes["agentbus.event_digest"] == {"stringValue": "03" * 32}
    assert "agentbus.ticket_id" not in attributes  # OTLP attributes cannot be null
    assert record.get("body", {}) == {}
    assert "traceId" not in record and "spanId" not in record


def test_a_collector_address_gets_the_logs_path_when_it_has_none() -> None:
    assert otlp.logs_endpoint("http://collector:4318") == "http://collector:4318/v1/logs"
    assert otlp.logs_endpoint("https://siem.example/") == "https://siem.example/v1/logs"
    assert otlp.logs_endpoint("http://collector:4318/custom/logs") == "http://collector:4318/custom/logs"
    assert otlp.logs_endpoint("collector:4318") is None
    assert otlp.logs_endpoint("ftp://collector") is None
