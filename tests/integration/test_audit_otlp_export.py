"""`agentbus export` as OTLP logs: POSTed over OTLP/HTTP to a real local receiver that decodes what
arrived, and written as OTLP/JSON lines; every record matches its audit row, purged rows included."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import builders
import orjson
import pytest
from agentbus.cli.main import app as cli
from agentbus.shared import serialization
from agentbus.shared.db import create_pool, migrate
from agentbus.shared.events import TicketReceivedV1
from agentbus.shared.retention import RetentionPolicy
from agentbus.trace_sink import retention, store
from agentbus.trace_sink.sink import to_row
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
NOW = datetime.now(UTC)


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP logs endpoint: /v1/logs takes protobuf requests; /refuse/v1/logs answers 400."""

    requests: list[ExportLogsServiceRequest]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/logs" or self.headers["Content-Type"] != "application/x-protobuf":
            self.send_response(400)
            self.end_headers()
            return
        self.server.requests.append(ExportLogsServiceRequest.FromString(body))
        reply = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), Handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def nanos(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: python(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [python(v) for v in value.array_value.values]
    return getattr(value, kind)


def as_otlp(value: Any) -> Any:
    """The event as OTLP carries it: integers beyond int64 as their decimal text."""
    if isinstance(value, dict):
        return {k: as_otlp(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_otlp(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return str(value)
    return value


async def test_export_posts_otlp_logs_that_match_the_stored_rows(
    server_database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    url = server_database_url
    await migrate(url)
    pool = await create_pool(url, max_size=2)
    try:
        for n, (tenant, days) in enumerate((("acme", 40), ("acme", 1), ("globex", 1))):
            ticket_id = f"T-{n}"
            event = TicketReceivedV1(
                ticket_id=ticket_id,
                tenant_id=tenant,
                payload=builders.ticket(
                    ticket_id=ticket_id, tenant_id=tenant, metadata={"big": 2**64 - 1, "f": 0.5, "none": None}
                ),
                producer=builders.PRODUCER,
                traceparent=f"00-{TRACE_ID}-{SPAN_ID}-01" if n else None,
            )
            row = to_row("agentbus.tickets.received.v1", n % 2, 100 + n, serialization.dumps(event))
            assert row is not None
            await store.append(pool, [row], recorded_at=NOW - timedelta(days=days))
        # T-0 expires: its row is exported purged, next to the retention record.
        policy = RetentionPolicy({"acme": 30}, {"refunds": 365})
        outcome = await retention.apply(pool, policy, "acme", NOW, actor="test")
        assert outcome.rows_purged == 1
        rows = await pool.fetch("SELECT * FROM audit.events ORDER BY position")
    finally:
        await pool.close()
    assert [r["event"] is None for r in rows] == [True, False, False, False]

    env = {"DATABASE_URL": url}
    base = ["export", "--since", "2000-01-01", "--state-dir", str(tmp_path)]
    sent = await asyncio.to_thread(CliRunner().invoke, cli, [*base, "--otlp-endpoint", receiver.url], env=env)
    assert sent.exit_code == 0, sent.output
    assert f"exported 4 events to {receiver.url}/v1/logs" in sent.stderr

    [request] = receiver.requests
    [resource_logs] = request.resource_logs
    resource = {kv.key: python(kv.value) for kv in resource_logs.resource.attributes}
    assert resource["service.name"] == "agentbus-audit"
    [scope_logs] = resource_logs.scope_logs
    assert scope_logs.scope.name == "agentbus.audit.export"
    records = scope_logs.log_records
    assert len(records) == len(rows)
    for record, row in zip(records, rows, strict=True):
        attributes = {kv.key: python(kv.value) for kv in record.attributes}
        assert attributes["agentbus.position"] == row["position"]
        assert attributes["agentbus.hash"] == row["hash"].hex()
        assert attributes["agentbus.prev_hash"] == row["prev_hash"].hex()
        assert attributes["agentbus.event_digest"] == row["event_digest"].hex()
        assert attributes["agentbus.event.type"] == row["type"] == record.event_name
        assert attributes["agentbus.event.version"] == row["version"]
        assert attributes.get("agentbus.ticket_id") == row["ticket_id"]
        assert attributes["agentbus.tenant_id"] == row["tenant_id"]
        assert attributes["messaging.destination.name"] == row["topic"]
        assert attributes["messaging.destination.partition.id"] == str(row["kafka_partition"])
        assert attributes["messaging.kafka.offset"] == row["kafka_offset"]
        assert record.time_unix_nano == nanos(row["occurred_at"])
        assert record.observed_time_unix_nano == nanos(row["recorded_at"])
        assert record.severity_number == 9  # INFO
        assert python(record.body) == as_otlp(row["event"])
        assert attributes.get("agentbus.purged", False) is (row["event"] is None)
        traced = row["event"] is not None and row["event"]["traceparent"] is not None
        assert (record.trace_id.hex(), record.span_id.hex()) == ((TRACE_ID, SPAN_ID) if traced else ("", ""))
    assert python(records[1].body)["payload"]["metadata"]["big"] == str(2**64 - 1)

    # The same records as OTLP/JSON lines in a file.
    out = tmp_path / "audit.otlp.jsonl"
    written = await asyncio.to_thread(
        CliRunner().invoke, cli, [*base, "--format", "otlp", "--tenant", "acme", "-o", str(out)], env=env
    )
    assert written.exit_code == 0, written.output
    [line] = [orjson.loads(raw) for raw in out.read_bytes().splitlines()]
    [json_records] = [s["logRecords"] for r in line["resourceLogs"] for s in r["scopeLogs"]]
    assert len(json_records) == 3  # acme: the purged row, T-1 and the retention record
    assert json_records[1]["traceId"] == TRACE_ID and json_records[1]["spanId"] == SPAN_ID
    assert json_records[1]["timeUnixNano"] == str(nanos(rows[1]["occurred_at"]))
    assert json_records[1]["severityNumber"] == 9
    assert json_records[0].get("body", {}) == {}  # purged: an empty AnyValue
    body = {kv["key"]: kv["value"] for kv in json_records[1]["body"]["kvlistValue"]["values"]}
    assert body["ticket_id"] == {"stringValue": "T-1"}

    # A collector that refuses, and input that cannot work.
    refused = await asyncio.to_thread(
        CliRunner().invoke, cli, [*base, "--otlp-endpoint", f"{receiver.url}/refuse/v1/logs"], env=env
    )
    assert refused.exit_code == 1 and "did not accept the export" in refused.output
    for args, message in (
        (["--otlp-endpoint", "ftp://collector"], "expected an http:// or https:// URL"),
        (["--format", "xml"], "expected one of ndjson, otlp"),
        (["--otlp-endpoint", receiver.url, "-o", str(out)], "leave out --output"),
    ):
        bad = await asyncio.to_thread(CliRunner().invoke, cli, [*base, *args], env=env)
        assert bad.exit_code == 2 and message in bad.output, bad.output
    assert len(receiver.requests) == 1
