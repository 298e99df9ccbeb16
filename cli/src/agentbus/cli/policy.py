"""`agentbus policy check|explain|versions`: validate bundles and show how a decision is reached."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from agentbus.policy import bundles, engine
from agentbus.shared.events import Proposal

from .stack import repo_root

app = typer.Typer(help="Policy bundles: check them, explain a decision, list versions in force.")


def _root() -> Path:
    return Path(os.environ.get("AGENTBUS_POLICIES_DIR") or repo_root() / "policies")


def _dirs(bundle: Path | None) -> list[Path]:
    if bundle is None:
        return bundles.BundleSet(_root()).directories()
    return [bundle.parent if bundle.is_file() else bundle]


@app.command()
def check(
    bundle: Annotated[Path | None, typer.Argument(help="bundle directory (default: every bundle)")] = None,
) -> None:
    """Validate bundles; print each problem as FILE:LINE: message."""
    directories = _dirs(bundle)
    if not directories:
        typer.secho(f"error: no bundles under {_root()}", fg="red", err=True)
        raise typer.Exit(2)
    failed = False
    for directory in directories:
        try:
            loaded = bundles.load(directory)
        except bundles.BundleError as exc:
            failed = True
            for problem in exc.problems:
                typer.secho(str(problem), fg="red", err=True)
            continue
        typer.echo(
            f"{directory}: ok — workflow {loaded.workflow}, version {loaded.version}, rollout "
            f"{loaded.rollout}, {len(loaded.rules)} rules, {len(loaded.allowed_tools)} tools"
        )
    raise typer.Exit(1 if failed else 0)


@app.command()
def versions() -> None:
    """The bundle version in force for every workflow."""
    for workflow, loaded in sorted(bundles.BundleSet(_root()).all().items()):
        typer.echo(f"{workflow:<12} {loaded.version}  rollout={loaded.rollout}  {loaded.path}")


def _json(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(Path(value[1:]).read_bytes() if value.startswith("@") else value)
    except (orjson.JSONDecodeError, OSError) as exc:
        typer.secho(f"error: {what} is not valid JSON ({exc}); pass JSON or @file", fg="red", err=True)
        raise typer.Exit(2) from exc


@app.command()
def explain(
    workflow: Annotated[str, typer.Option(help="workflow whose bundle decides")],
    tool: Annotated[str, typer.Option(help="proposed tool")],
    args: Annotated[str, typer.Option(help="tool arguments as JSON (or @file)")] = "{}",
    facts: Annotated[
        str | None, typer.Option(help="facts as JSON (or @file); default: read from the database")
    ] = None,
    agent: Annotated[str | None, typer.Option(help="agent identity (default: the bundle's)")] = None,
    tenant: str = "acme",
    ticket: str = "T-EXPLAIN",
) -> None:
    """Which rules fire for a proposed action, and the decision they lead to."""
    directory = _root() / workflow
    try:
        loaded = bundles.load(directory)
    except bundles.BundleError as exc:
        typer.secho(f"error: bundle {directory} is invalid:\n{exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    proposal = Proposal(
        action_id="act-explain",
        workflow=workflow,
        agent=agent or loaded.agent,
        tool=tool,
        args=_json(args, "--args"),
        idempotency_key=f"{tenant}:{ticket}:explain:{tool}",
    )
    known = _json(facts, "--facts")
    if known is None:
        known = asyncio.run(_facts_from_database(proposal))
    result = engine.evaluate(proposal, loaded, ticket_id=ticket, tenant_id=tenant, facts=known)
    typer.echo(f"bundle   {directory} ({loaded.version}, rollout {loaded.rollout})")
    typer.echo(f"action   {proposal.agent} → {tool} {orjson.dumps(proposal.args).decode()}")
    typer.echo(f"facts    {orjson.dumps(known).decode()}")
    typer.echo("fired:" if result.fired else "fired:   (no rule matched)")
    by_id = {r.rule_id: r for r in loaded.rules.values()}
    for fired in result.fired:
        rule = by_id.get(fired.rule_id)
        where = f"{directory / 'rules.cedar'}:{rule.line}" if rule else "(built-in check)"
        typer.echo(f"  - {fired.rule_id} → {fired.verdict}  [{fired.section}]  {where}")
        if rule:
            for line in rule.text.splitlines():
                typer.echo(f"      {line}")
    for error in result.errors:
        typer.echo(f"  ! {error}")
    colour = {"allow": "green", "needs_approval": "blue", "deny": "red"}[result.verdict]
    typer.secho(f"verdict  {result.verdict} ({', '.join(result.rule_ids)})", fg=colour, bold=True)
    typer.echo(f"reason   {result.reason}")


async def _facts_from_database(proposal: Proposal) -> dict[str, Any]:
    from agentbus.policy.facts import PgFacts
    from agentbus.shared.db import create_pool

    from .main import connection
    from .options import DEFAULT_STATE

    settings = connection(Path(os.environ.get("AGENTBUS_STATE_DIR", DEFAULT_STATE)))
    assert settings.database_url
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        return await PgFacts(pool).facts(proposal)
    finally:
        await pool.close()
