"""`agentbus audit verify`: recompute the audit store's hash chain and check it against the signed
checkpoints; exit 0 when intact, 1 naming the first broken link, 2 when it cannot check. `agentbus audit
retention` (cli/retention.py). And `agentbus export`: the audit rows of a time window for a SIEM, as
NDJSON or OTLP logs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import orjson
import typer
from agentbus.shared.audit import VerifyReport, verify
from agentbus.shared.capabilities import load_verify_keys
from agentbus.shared.db import connect

from .audit_inputs import database_url as resolve_database_url
from .audit_inputs import parse_time
from .options import DEFAULT_STATE, StateDir, fail
from .retention import retention_cmd
from .stack import audit_paths

if TYPE_CHECKING:
    from . import otlp

# Records per OTLP request (the SDK's batch size); the exporter itself is imported only when used.
OTLP_BATCH = 512

app = typer.Typer(help="Check the tamper-evident audit store; apply retention.", no_args_is_help=True)
app.command("retention")(retention_cmd)


@app.callback()
def audit() -> None:
    """Check the tamper-evident audit store; apply retention."""


@app.command("verify")
def verify_cmd(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            envvar="AGENTBUS_AUDIT_CHECKPOINT_DIR",
            help="signed checkpoints: a directory of *.jsonl or one file (default: the stack's)",
        ),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            envvar="AGENTBUS_AUDIT_VERIFY_KEYS_DIR",
            help="public keys (<kid>.pub) the checkpoints must be signed with (default: the stack's)",
        ),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="default: the running stack's database")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Walk the chain in order and recompute every hash; name the first broken link."""
    default_checkpoints, _, default_keys = audit_paths(state_dir)
    if checkpoints is None and default_checkpoints.exists():
        checkpoints = default_checkpoints
    if checkpoints is not None and not checkpoints.exists():
        fail(f"{checkpoints}: no such checkpoint file or directory")
    url = resolve_database_url(database_url, state_dir)
    public_keys = load_verify_keys(keys or default_keys, None)

    async def run() -> VerifyReport:
        conn = await connect(url)
        try:
            return await verify(conn, checkpoints, public_keys)
        finally:
            await conn.close()

    report = asyncio.run(run())
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        typer.echo(render(report, checkpoints))
    raise typer.Exit(0 if report.ok else 1)


def render(report: VerifyReport, checkpoints: Path | None) -> str:
    latest = report.latest_checkpoint
    if latest is not None:
        anchors = (
            f"{report.checkpoints} signed checkpoints, the latest at position {latest.position} ({latest.at})"
        )
    elif checkpoints is None:
        anchors = "no checkpoints given (--checkpoints): a truncated tail cannot be detected"
    else:
        anchors = f"no validly signed checkpoints in {checkpoints}: a truncated tail cannot be detected"
    purged = f" ({report.purged} purged by retention, checked by digest)" if report.purged else ""
    if report.ok:
        head = report.head.hash.hex()[:16] if report.head else "-"
        return f"chain OK: {report.events} events{purged}, head {head}\n{anchors}"
    first = report.first
    assert first is not None
    lines = [f"chain BROKEN: first bad link at {first}"]
    lines += [f"  also {p}" for p in report.problems[1:]]
    if report.more_problems:
        lines.append(f"  … and {report.more_problems} more")
    lines.append(f"{report.events} events read; {anchors}")
    return "\n".join(lines)


EXPORT = """
SELECT position, hash, prev_hash, chain_version, event_digest, event_id, type, version, ticket_id,
       tenant_id, topic, kafka_partition, kafka_offset, occurred_at, recorded_at, event
FROM audit.events
WHERE occurred_at >= $1 AND ($2::timestamptz IS NULL OR occurred_at < $2)
  AND ($3::text IS NULL OR tenant_id = $3)
ORDER BY position
"""
FORMATS = ("ndjson", "otlp")


def export_cmd(
    since: Annotated[str, typer.Option(help="events that occurred at or after this ISO 8601 time")],
    until: Annotated[str | None, typer.Option(help="…and before this one (default: now)")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's events")] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="ndjson: one audit row per line; otlp: OTLP/JSON ExportLogsServiceRequest lines "
            f"({OTLP_BATCH} log records each)",
        ),
    ] = "ndjson",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file (default: stdout)")
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            help="POST the records as OTLP logs (OTLP/HTTP, protobuf) to this collector, e.g. "
            "http://localhost:4318 (/v1/logs is added to a URL without a path)"
        ),
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="default: the running stack's database")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Export audit rows for a SIEM, in chain order, each with its chain position, hash and previous
    hash (so the receiver can check the links), Kafka topic, partition and offset, and the event. A row
    whose event retention purged comes with its event digest and no event."""
    if output_format not in FORMATS:
        fail(f"--format {output_format!r}: expected one of {', '.join(FORMATS)}")
    from . import otlp  # protobuf and the OTLP exporter: only for this command

    endpoint = None
    if otlp_endpoint is not None:
        endpoint = otlp.logs_endpoint(otlp_endpoint)
        if endpoint is None:
            fail(f"--otlp-endpoint {otlp_endpoint!r}: expected an http:// or https:// URL of a collector")
        if output is not None:
            fail("--otlp-endpoint sends the records to the collector; leave out --output")
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    url = resolve_database_url(database_url, state_dir)
    try:
        out: IO[bytes] = output.open("wb") if output is not None else sys.stdout.buffer
    except OSError as exc:
        fail(f"--output {output}: cannot write it ({exc.strerror or exc})")
    collector = otlp.Collector(endpoint) if endpoint else None
    write = batch_writer(output_format, out, collector)

    async def run() -> int:
        conn = await connect(url)
        count, batch = 0, []
        try:
            async with conn.transaction():  # a cursor streams rows instead of loading the window
                async for row in conn.cursor(EXPORT, start, end, tenant, prefetch=OTLP_BATCH):
                    batch.append(row)
                    if len(batch) == OTLP_BATCH:
                        await asyncio.to_thread(write, batch)
                        count, batch = count + len(batch), []
            if batch:
                await asyncio.to_thread(write, batch)
                count += len(batch)
        finally:
            await conn.close()
        return count

    try:
        count = asyncio.run(run())
    except ExportRefused as exc:
        typer.secho(
            f"error: the collector at {exc} did not accept the export (see the exporter's log above);"
            " records up to the failed batch were sent",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1) from None
    finally:
        if collector is not None:
            collector.close()
        if output is not None:
            out.close()
        else:
            out.flush()
    where = f" to {endpoint}" if endpoint else f" to {output}" if output else ""
    typer.echo(f"exported {count} events{where}", err=True)


class ExportRefused(Exception):
    """The collector did not take a batch."""


def batch_writer(
    output_format: str, out: IO[bytes], collector: otlp.Collector | None
) -> Callable[[list[Any]], None]:
    """What export does with each batch of rows: POST it to the collector, or write its lines."""
    from . import otlp

    def post(batch: list[Any]) -> None:
        assert collector is not None
        if not collector.send([otlp.log_record(row) for row in batch]):
            raise ExportRefused(collector.endpoint)

    def otlp_json(batch: list[Any]) -> None:
        out.write(otlp.json_line([otlp.log_record(row) for row in batch]))

    def ndjson(batch: list[Any]) -> None:
        out.writelines(orjson.dumps(ndjson_line(row)) + b"\n" for row in batch)

    if collector is not None:
        return post
    return otlp_json if output_format == "otlp" else ndjson


def ndjson_line(row: Any) -> dict[str, Any]:
    return {
        "position": row["position"],
        "hash": row["hash"].hex() if row["hash"] else None,
        "prev_hash": row["prev_hash"].hex() if row["prev_hash"] else None,
        "chain_version": row["chain_version"],
        "event_digest": row["event_digest"].hex() if row["event_digest"] else None,
        "topic": row["topic"],
        "partition": row["kafka_partition"],
        "offset": row["kafka_offset"],
        "recorded_at": row["recorded_at"],
        "event": row["event"],
    }
