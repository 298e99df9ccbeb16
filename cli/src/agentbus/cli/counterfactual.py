"""`agentbus replay counterfactual`: the recorded decisions of a window re-decided under another
policy bundle, facts taken from the log; prints the decisions that flip and the money at stake."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import orjson
import typer
from agentbus.policy import bundles
from agentbus.policy.counterfactual import NOT_ASKED, NOTES, UNDETERMINED, Replayed, replay, summarise
from agentbus.shared.db import connect
from agentbus.shared.events import Event
from agentbus.shared.events.registry import DecodeError, decode

from .audit_inputs import parse_time
from .options import DEFAULT_STATE, StateDir, fail
from .replay import app
from .runtime import RuntimeInfo

WINDOW = """
SELECT event_id, ticket_id, tenant_id, occurred_at FROM audit.events
WHERE type = 'action.decided' AND event IS NOT NULL  -- NULL: purged by retention
  AND ($1::timestamptz IS NULL OR occurred_at >= $1) AND ($2::timestamptz IS NULL OR occurred_at < $2)
  AND ($3::text[] IS NULL OR ticket_id = ANY($3)) AND ($4::text IS NULL OR tenant_id = $4)
"""
# Quota state comes from before the window too: each ticket's whole history (task limits), and
# every decision of its tenants since the start of the day (budgets, rate windows).
HISTORY = """
SELECT event FROM audit.events
WHERE type IN ('action.decided', 'action.executed', 'approval.decided') AND event IS NOT NULL
  AND (ticket_id = ANY($1::text[])
       OR (tenant_id = ANY($2::text[]) AND occurred_at >= $3 AND occurred_at <= $4))
ORDER BY occurred_at, position
"""


def load_bundles(bundle_dirs: list[Path], policies: Path | None) -> dict[str, bundles.Bundle]:
    """The counterfactual bundles by workflow: every bundle under --policies, then each --bundle."""
    found: dict[str, bundles.Bundle] = {}
    try:
        if policies is not None:
            if not policies.is_dir():
                fail(f"--policies {policies}: no such directory (a policies root, like policies/)")
            found = bundles.BundleSet(policies).all()
            if not found:
                fail(f"--policies {policies}: no bundles in it (expected <workflow>/bundle.toml)")
        chosen: dict[str, Path] = {}
        for given in bundle_dirs:
            directory = given.parent if given.is_file() else given
            if not directory.is_dir():
                fail(f"--bundle {given}: no such directory (a bundle directory, like policies/refunds)")
            loaded = bundles.load(directory)
            if loaded.workflow in chosen:
                first = chosen[loaded.workflow]
                fail(f"--bundle {given}: workflow {loaded.workflow!r} is already given by --bundle {first}")
            chosen[loaded.workflow] = given
            found[loaded.workflow] = loaded
    except bundles.BundleError as exc:
        fail(f"the bundle is invalid; fix it (or check it with `agentbus policy check`):\n{exc}")
    return found


async def load_events(
    database_url: str,
    since: datetime | None,
    until: datetime | None,
    tickets: list[str] | None,
    tenant: str | None,
) -> tuple[set[str], list[Event]]:
    """The window's decision event ids, and every event the replay needs, in log order."""
    conn = await connect(database_url)
    try:
        window = await conn.fetch(WINDOW, since, until, tickets, tenant)
        if not window:
            return set(), []
        day = datetime.combine(min(r["occurred_at"] for r in window).astimezone(UTC).date(), time(), UTC)
        rows = await conn.fetch(
            HISTORY,
            sorted({r["ticket_id"] for r in window if r["ticket_id"]}),
            sorted({r["tenant_id"] for r in window if r["tenant_id"]}),
            day,
            max(r["occurred_at"] for r in window),
        )
    finally:
        await conn.close()
    events = []
    for row in rows:
        try:
            events.append(decode(orjson.dumps(row["event"])))
        except DecodeError:
            continue  # the trace sink stored only events that decoded; nothing to re-decide here
    return {r["event_id"] for r in window}, events


def report(
    rows: list[Replayed],
    counterfactual: dict[str, bundles.Bundle],
    window: dict[str, Any],
) -> dict[str, Any]:
    recorded = Counter((r.workflow, r.recorded_version) for r in rows)
    return {
        "window": window,
        "recorded_versions": [
            {"workflow": w, "version": v, "decisions": n} for (w, v), n in sorted(recorded.items(), key=str)
        ],
        "counterfactual_versions": [
            {"workflow": w, "version": b.version, "path": str(b.path)}
            for w, b in sorted(counterfactual.items())
        ],
        **summarise(rows),
        "notes": list(NOTES),
        "decisions": [r.to_json() for r in rows],
    }


def money(cents: int | None, currency: str | None) -> str:
    if cents is None:
        return "-"
    unit = "$" if currency in (None, "USD") else f"{currency} "
    return f"{'-' if cents < 0 else ''}{unit}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _verdict(verdict: str, shadow: bool) -> str:
    return f"{verdict}+shadow" if shadow else verdict


def render(data: dict[str, Any], every: bool) -> str:
    window = data["window"]
    totals = data["totals"]
    span = f"{window['since'] or 'the first decision'} to {window['until'] or 'now'}"
    lines = [f"counterfactual replay of {totals['decisions']} recorded decisions, {span}"]
    for v in data["recorded_versions"]:
        lines.append(f"  recorded        {v['workflow']:<10} {v['version']}  ({v['decisions']} decisions)")
    for v in data["counterfactual_versions"]:
        lines.append(f"  counterfactual  {v['workflow']:<10} {v['version']}  {v['path']}")
    shown = [
        d for d in data["decisions"] if every or d["flipped"] or d["verdict"] in (UNDETERMINED, NOT_ASKED)
    ]
    lines.append("")
    if shown:
        head = f"{'ticket':<14} {'action':<16} {'tool':<30} {'amount':>9}  {'recorded -> counterfactual':<34}"
        lines.append(f"{head} {'rules':<28} at stake")
        for d in shown:
            action = d["action_id"].removeprefix(f"act-{d['ticket_id']}-")
            if d["kind"] == "approval":
                action += " approval"
            change = (
                f"{_verdict(d['recorded'], d['recorded_shadow'])} -> {_verdict(d['verdict'], d['shadow'])}"
            )
            stake = money(d["amount_cents"], d["currency"]) if d["flipped"] else ""
            lines.append(
                f"{d['ticket_id'] or '-':<14} {action:<16} {d['tool']:<30} "
                f"{money(d['amount_cents'], d['currency']):>9}  {change:<34} "
                f"{','.join(d['rule_ids']) or '-':<28} {stake}".rstrip()
                + ("  (after a flip)" if d["after_flip"] else "")
            )
            for missing in d["missing"]:
                lines.append(f"{'':<14} missing: {missing}")
    else:
        lines.append("no decision flips" + ("" if every else " (--all lists every decision)"))
    lines.append("")
    asked = f", {totals['not_asked']} approvals no longer asked for" if totals["not_asked"] else ""
    lines.append(
        f"{totals['decisions']} decisions: {totals['replayed']} replayed ({totals['flipped']} flipped, "
        f"{totals['unchanged']} unchanged, {totals['undetermined']} undetermined{asked}), "
        f"{totals['skipped']} skipped (no bundle given for their workflow)"
    )
    for m in data["money_at_stake"]:
        lines.append(
            f"money at stake  {m['from']} -> {m['to']}: {money(m['cents'], m['currency'])} "
            f"in {m['decisions']} decision{'s' if m['decisions'] != 1 else ''}"
        )
    for key, what in (
        ("no_longer_autonomous_cents", "no longer autonomous"),
        ("newly_autonomous_cents", "newly autonomous"),
    ):
        for currency, cents in sorted(data[key].items()):
            lines.append(f"{what}: {money(cents, currency or None)}")
    lines.append("")
    lines += [f"note: {n}" for n in data["notes"]]
    return "\n".join(lines)


@app.command("counterfactual")
def counterfactual_cmd(
    bundle: Annotated[
        list[Path] | None,
        typer.Option(help="a bundle directory to decide with instead, e.g. a copy of policies/refunds"),
    ] = None,
    policies: Annotated[
        Path | None, typer.Option(help="a policies root: every bundle in it decides its workflow")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="decisions recorded at or after this ISO 8601 time")
    ] = None,
    until: Annotated[str | None, typer.Option(help="…and before this one (default: now)")] = None,
    ticket: Annotated[
        list[str] | None, typer.Option(help="only this ticket's decisions (repeatable)")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's decisions")] = None,
    every: Annotated[bool, typer.Option("--all", help="list every decision, not only flips")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the report, with every decision, as JSON")] = False,
    database_url: Annotated[
        str | None, typer.Option(envvar="DATABASE_URL", help="default: the running stack's database")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Re-decide the recorded decisions of a window under another bundle version, with tool results
    and quota state taken from the log (never the systems of record); report the decisions that
    flip and the money at stake. Exit 0 with a report, 1 when the window holds no decision."""
    if not bundle and policies is None:
        fail("give --bundle DIR (a bundle directory) or --policies DIR: the policy to re-decide under")
    if since is None and not ticket:
        fail("give --since TIME (and --until TIME) or --ticket ID: the decisions to replay")
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start is not None and end is not None and end <= start:
        fail(f"--until {until!r} is not after --since {since!r}")
    counterfactual = load_bundles(bundle or [], policies)
    if not database_url:
        info = RuntimeInfo.load(state_dir / "runtime.json")
        database_url = info.database_url if info else None
    if not database_url:
        fail("no database: start the stack with `agentbus up`, or set DATABASE_URL (or --database-url)")
    try:
        window_ids, events = asyncio.run(load_events(database_url, start, end, ticket, tenant))
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"cannot read the audit store at the database given ({type(exc).__name__}: {exc})")
    if not window_ids:
        where = " ".join(
            f"{flag} {value}"
            for flag, value in (("--since", since), ("--until", until), ("--tenant", tenant))
            if value
        )
        where += "".join(f" --ticket {t}" for t in ticket or [])
        typer.secho(f"no decisions recorded for {where.strip()}: nothing to replay", fg="yellow", err=True)
        raise typer.Exit(1)
    # Only --bundle: the other workflows are out of scope. --policies: a workflow with no bundle
    # there is denied, as the live decider would.
    rows = replay(events, counterfactual, skip_unknown=policies is None)
    window = {
        "since": start and start.isoformat(),
        "until": end and end.isoformat(),
        "tickets": ticket or [],
        "tenant": tenant,
    }
    data = report([r for r in rows if r.event_id in window_ids], counterfactual, window)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        typer.echo(render(data, every))
