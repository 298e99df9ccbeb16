"""`agentbus replay redrive`: republish stored events so a stage (or every stage) processes them again."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from agentbus.shared.db import connect
from agentbus.shared.redrive import (
    NOT_REDRIVEN,
    STAGES,
    Redriver,
    RedriveReport,
    Selection,
    new_run_id,
    stored_events,
)
from agentbus.shared.settings import Settings

from .audit_inputs import parse_time
from .options import DEFAULT_STATE, StateDir, connection, fail
from .replay import app


@app.command("redrive")
def redrive(
    ticket: Annotated[
        list[str] | None, typer.Option("--ticket", help="a ticket to re-drive (repeat for several)")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="or every event that occurred at or after this ISO 8601 time")
    ] = None,
    until: Annotated[str | None, typer.Option(help="…and before this one (with --since)")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's events")] = None,
    stage: Annotated[
        str | None,
        typer.Option(help=f"only what this stage consumes, for it alone: {', '.join(STAGES)}"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be sent; send nothing")
    ] = False,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Republish stored events, unchanged (same event ids), from the audit store to their topics, in
    chain order. Every consumer treats them as redeliveries: a stage redoes what it owes and nothing
    takes effect twice. control.switch and deadletter.recorded events are never republished (an old
    switch would overwrite today's; a dead letter drives no stage). Exit 0 when sent, 1 when nothing
    matched, 2 on bad input."""
    tickets = ticket or []
    if bool(tickets) == (since is not None):
        fail("say what to re-drive: --ticket ID (repeatable) or --since TIME [--until TIME], not both")
    if until is not None and since is None:
        fail("--until needs --since")
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start and end and end <= start:
        fail(f"--until {until} is not after --since {since}")
    if stage is not None and stage not in STAGES:
        fail(f"--stage {stage!r}: expected one of {', '.join(STAGES)}")
    settings = connection(state_dir)
    selection = Selection(tickets=tickets, since=start, until=end, tenant=tenant)
    report = asyncio.run(run(settings, selection, stage, dry_run))
    verb = "would re-drive" if dry_run else "re-drove"
    target = f" to {stage}" if stage else " to every consumer"
    typer.echo(f"run {report.run_id}: {verb} {report.total} events of {len(report.tickets)} tickets{target}")
    for topic, count in sorted(report.per_topic.items()):
        typer.echo(f"  {topic:<48} {count:>6}")
    if not report.total:
        typer.echo(f"nothing matched (never re-driven: {', '.join(sorted(NOT_REDRIVEN))})", err=True)
        raise typer.Exit(1)


async def run(settings: Settings, selection: Selection, stage: str | None, dry_run: bool) -> RedriveReport:
    assert settings.database_url
    report = RedriveReport(run_id=new_run_id(), stage=stage)
    conn = await connect(settings.database_url)
    try:
        redriver = Redriver(settings)
        if dry_run:  # counts only: no broker needed
            await redriver.send(stored_events(conn, selection), report, dry_run=True)
        else:
            async with redriver:
                await redriver.send(stored_events(conn, selection), report)
    finally:
        await conn.close()
    return report
