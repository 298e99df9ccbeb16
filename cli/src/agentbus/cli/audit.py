"""`agentbus audit verify`: recompute the audit store's hash chain and check it against the signed
checkpoints; exit 0 when intact, 1 naming the first broken link, 2 when it cannot check. And
`agentbus export`: the audit rows of a time window as NDJSON for a SIEM."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from agentbus.shared.audit import VerifyReport, verify
from agentbus.shared.capabilities import load_verify_keys
from agentbus.shared.db import connect

from .options import DEFAULT_STATE, StateDir, fail
from .runtime import RuntimeInfo
from .stack import audit_paths

app = typer.Typer(help="Check the tamper-evident audit store.", no_args_is_help=True)


@app.callback()
def audit() -> None:
    """Check the tamper-evident audit store."""


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
    if not database_url:
        info = RuntimeInfo.load(state_dir / "runtime.json")
        database_url = info.database_url if info else None
    if not database_url:
        fail("no database: start the stack with `agentbus up`, or set DATABASE_URL (or --database-url)")
    public_keys = load_verify_keys(keys or default_keys, None)

    async def run() -> VerifyReport:
        assert database_url
        conn = await connect(database_url)
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
    if report.ok:
        head = report.head.hash.hex()[:16] if report.head else "-"
        return f"chain OK: {report.events} events, head {head}\n{anchors}"
    first = report.first
    assert first is not None
    lines = [f"chain BROKEN: first bad link at {first}"]
    lines += [f"  also {p}" for p in report.problems[1:]]
    if report.more_problems:
        lines.append(f"  … and {report.more_problems} more")
    lines.append(f"{report.events} events read; {anchors}")
    return "\n".join(lines)


EXPORT = """
SELECT position, hash, prev_hash, topic, kafka_partition, kafka_offset, recorded_at, event
FROM audit.events
WHERE occurred_at >= $1 AND ($2::timestamptz IS NULL OR occurred_at < $2)
  AND ($3::text IS NULL OR tenant_id = $3)
ORDER BY position
"""


def parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: expected an ISO 8601 time such as 2026-11-21 or 2026-11-21T09:30:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def export_cmd(
    since: Annotated[str, typer.Option(help="events that occurred at or after this ISO 8601 time")],
    until: Annotated[str | None, typer.Option(help="…and before this one (default: now)")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's events")] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="ndjson: one audit row per line, in chain order")
    ] = "ndjson",
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="default: the running stack's database")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Export audit rows for a SIEM, one JSON object per line: chain position, hash and previous hash
    (so the receiver can check the links), Kafka topic, partition and offset, and the event."""
    if output_format != "ndjson":
        fail(f"--format {output_format!r}: only ndjson is supported")
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if not database_url:
        info = RuntimeInfo.load(state_dir / "runtime.json")
        database_url = info.database_url if info else None
    if not database_url:
        fail("no database: start the stack with `agentbus up`, or set DATABASE_URL (or --database-url)")
    out = sys.stdout.buffer

    async def run() -> int:
        assert database_url
        conn = await connect(database_url)
        count = 0
        try:
            async with conn.transaction():  # a cursor streams rows instead of loading the window
                async for row in conn.cursor(EXPORT, start, end, tenant, prefetch=500):
                    line = {
                        "position": row["position"],
                        "hash": row["hash"].hex() if row["hash"] else None,
                        "prev_hash": row["prev_hash"].hex() if row["prev_hash"] else None,
                        "topic": row["topic"],
                        "partition": row["kafka_partition"],
                        "offset": row["kafka_offset"],
                        "recorded_at": row["recorded_at"],
                        "event": row["event"],
                    }
                    out.write(orjson.dumps(line) + b"\n")
                    count += 1
        finally:
            await conn.close()
        return count

    count = asyncio.run(run())
    out.flush()
    typer.echo(f"exported {count} events", err=True)
