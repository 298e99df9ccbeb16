"""`agentbus audit verify`: recompute the audit store's hash chain and check it against the signed
checkpoints; exit 0 when intact, 1 naming the first broken link, 2 when it cannot check."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer
from agentbus.shared.audit import VerifyReport, verify
from agentbus.shared.capabilities import load_verify_keys
from agentbus.shared.db import connect

from .runtime import RuntimeInfo
from .stack import audit_paths

app = typer.Typer(help="Check the tamper-evident audit store.", no_args_is_help=True)

StateDir = Annotated[
    Path, typer.Option(envvar="AGENTBUS_STATE_DIR", help="where `up` keeps logs and runtime.json")
]
DEFAULT_STATE = Path(".agentbus")


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


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
