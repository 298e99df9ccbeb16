"""`agentbus audit retention`: apply each tenant's retention to the audit store, the PII vault and the
tickets' operational rows, and print per tenant what expired and what was done."""

from __future__ import annotations

import asyncio
import getpass
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from agentbus.policy import bundles
from agentbus.shared.audit import instant
from agentbus.shared.db import create_pool
from agentbus.shared.retention import (
    TENANTS_FILE,
    UNCLASSIFIED,
    RetentionConfigError,
    RetentionPolicy,
    load_tenants,
)
from agentbus.trace_sink import retention

from .audit_inputs import database_url, parse_time
from .options import DEFAULT_STATE, StateDir, fail
from .stack import repo_root


def retention_cmd(
    tenant: Annotated[str | None, typer.Option(help="only this tenant (default: every tenant)")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report what would expire; change nothing")
    ] = False,
    now: Annotated[
        str | None,
        typer.Option(help="apply retention as of this ISO 8601 time, not later than now (default: now)"),
    ] = None,
    policies: Annotated[
        Path | None,
        typer.Option(
            envvar="AGENTBUS_POLICIES_DIR", help="policy bundles, whose retention_days are the default"
        ),
    ] = None,
    tenants_file: Annotated[
        Path | None,
        typer.Option(
            "--tenants",
            envvar="AGENTBUS_TENANTS_FILE",
            help=f"per-tenant retention_days (default: <policies>/{TENANTS_FILE}, when present)",
        ),
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="who runs this, for the retention record (default: user@host)")
    ] = None,
    database_url_option: Annotated[
        str | None,
        typer.Option("--database-url", envvar="DATABASE_URL", help="default: the running stack's database"),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Purge the events of tickets past their retention from the audit chain (each event's digest
    stays, so `agentbus audit verify` still passes), shred data subjects no live ticket names, and
    delete the tickets' operational rows. Each tenant's run is one transaction, recorded in the chain."""
    moment = parse_time(now, "--now") or datetime.now(UTC)
    if moment > datetime.now(UTC):
        fail(f"--now {now!r} is in the future: that would purge records before their retention ends")
    policy = load_policy(policies or repo_root() / "policies", tenants_file)
    url = database_url(database_url_option, state_dir)
    who = actor or f"{getpass.getuser()}@{socket.gethostname()}"

    async def run() -> list[retention.TenantOutcome]:
        pool = await create_pool(url, max_size=2)
        try:
            async with pool.acquire() as conn:
                known = await retention.tenants(conn, policy)
            if tenant is not None and tenant not in known:
                fail(
                    f"--tenant {tenant!r}: no audit events, personal data or tenants-file entry for it"
                    f" (tenants: {', '.join(known) or 'none'})"
                )
            return [
                await retention.apply(pool, policy, name, moment, actor=who, dry_run=dry_run)
                for name in ([tenant] if tenant is not None else known)
            ]
        finally:
            await pool.close()

    for outcome in asyncio.run(run()):
        typer.echo(render(outcome))
    if dry_run:
        typer.echo("dry run: nothing was changed")


def load_policy(policies: Path, tenants_file: Path | None) -> RetentionPolicy:
    """The bundles' retention_days by workflow, and the tenants file's overrides."""
    try:
        workflows = {w: b.retention_days for w, b in bundles.BundleSet(policies).all().items()}
    except bundles.BundleError as exc:
        fail(f"policy bundles under {policies}: {exc}")
    if not workflows:
        # With no bundle there is no default retention, and a default of 0 days would purge everything.
        fail(f"no policy bundles under {policies}: their retention_days are the default (set --policies)")
    path = tenants_file or policies / TENANTS_FILE
    try:
        tenants = load_tenants(path) if tenants_file is not None or path.exists() else {}
    except RetentionConfigError as exc:
        fail(str(exc))
    return RetentionPolicy(tenants, workflows)


def render(outcome: retention.TenantOutcome) -> str:
    days, cutoffs = outcome.retention_days, outcome.cutoffs
    if set(cutoffs) == {UNCLASSIFIED}:
        kept = f"cutoff {instant(cutoffs[UNCLASSIFIED])} ({days[UNCLASSIFIED]} days, tenants file)"
    else:
        kept = "cutoff " + ", ".join(
            f"{'unclassified' if w == UNCLASSIFIED else w} {instant(c)} ({days[w]} days)"
            for w, c in cutoffs.items()
        )
    done = (
        f"{outcome.rows_purged} rows purged ({outcome.tickets} tickets), "
        f"{outcome.subjects_shredded} subjects shredded, "
        f"{sum(outcome.operational.values())} operational rows deleted"
    )
    if outcome.rows_kept:
        done += f", {outcome.rows_kept} format-1 rows kept (their hash covers the event)"
    if outcome.record_id:
        done += f"; retention record {outcome.record_id}"
    return f"{outcome.tenant}: {kept}: {done}"
