"""`agentbus approvals list|show|approve|reject`: the escalation service's approvals API from the
command line. The API's URL comes from --url / AGENTBUS_APPROVALS_URL, else from the runtime.json
that `agentbus up` wrote; the bearer token from --token / AGENTBUS_TOKEN."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer

from .options import DEFAULT_STATE, StateDir, fail
from .runtime import RuntimeInfo

app = typer.Typer(help="Approve or reject actions that policy sent for human approval.", no_args_is_help=True)

Token = Annotated[
    str | None,
    typer.Option("--token", envvar="AGENTBUS_TOKEN", help="bearer token (see policies/identities.toml)"),
]
Url = Annotated[
    str | None,
    typer.Option("--url", envvar="AGENTBUS_APPROVALS_URL", help="approvals API (default: from runtime.json)"),
]
AsJson = Annotated[bool, typer.Option("--json", help="the API's JSON")]
STATUSES = ("pending", "approved", "rejected", "expired", "all")


def api_url(url: str | None, state_dir: Path) -> str:
    if not url:
        info = RuntimeInfo.load(state_dir / "runtime.json")
        url = info.approvals_url if info else None
    if not url:
        fail(
            "no approvals API found: start the stack with `agentbus up`, or set AGENTBUS_APPROVALS_URL "
            "(or --url) to the escalation service's address"
        )
    return url.rstrip("/")


def call(method: str, path: str, *, token: str | None, url: str, body: Any = None) -> Any:
    """One API call; an error answer prints the server's reason and exits 2."""
    if not token:
        fail("no token: pass --token or set AGENTBUS_TOKEN (tokens are in identities.toml)")
    import httpx  # here, not at the top: every other `agentbus` command would pay for its import

    try:
        response = httpx.request(
            method, url + path, headers={"Authorization": f"Bearer {token}"}, json=body, timeout=30
        )
    except httpx.HTTPError as exc:
        fail(f"cannot reach the approvals API at {url} ({type(exc).__name__}: {exc})")
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        reason = data.get("reason") if isinstance(data, dict) else None
        reason = reason or f"HTTP {response.status_code}: {response.text.strip()[:200]}"
        fail(reason, prefix="refused" if response.status_code == 403 else "error")
    return data


def dump(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def change(approval: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(approval["args"].items()))


@app.command("list")
def list_cmd(
    status: Annotated[str, typer.Option(help="pending, approved, rejected, expired or all")] = "pending",
    token: Token = None,
    url: Url = None,
    state_dir: StateDir = DEFAULT_STATE,
    as_json: AsJson = False,
) -> None:
    """Approvals (pending ones unless --status), newest first."""
    if status not in STATUSES:
        fail(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    found = call("GET", f"/approvals?status={status}", token=token, url=api_url(url, state_dir))["approvals"]
    if as_json:
        dump(found)
        return
    if not found:
        typer.echo("no approvals" if status == "all" else f"no {status} approvals")
        return
    typer.echo(f"{'approval':<14} {'status':<9} {'ticket':<12} {'tool':<24} {'role':<16} change")
    for a in found:
        typer.echo(
            f"{a['id']:<14} {a['status']:<9} {a['ticket_id']:<12} {a['tool']:<24} "
            f"{a['required_role']:<16} {change(a)}"
        )


@app.command()
def show(
    approval_id: str,
    token: Token = None,
    url: Url = None,
    state_dir: StateDir = DEFAULT_STATE,
    as_json: AsJson = False,
) -> None:
    """One approval: the exact change it would make, why it waits, and who decided it."""
    a = call("GET", f"/approvals/{quote(approval_id, safe='')}", token=token, url=api_url(url, state_dir))
    if as_json:
        dump(a)
        return
    typer.echo(render(a))


def render(a: dict[str, Any]) -> str:
    lines = [
        f"{a['id']}  {a['status']}  (needs role {a['required_role']})",
        f"ticket    {a['ticket_id']} (tenant {a['tenant_id']})",
        f"action    {a['action_id']}: {a['tool']} as {a['agent']}",
        f"key       {a['idempotency_key']}",
        f"why       {a['reason']}",
        f"rules     {', '.join(a['rule_ids']) or '-'} (policy {a['policy_version'] or '-'})",
        f"created   {a['created_at']}   expires {a['expires_at']}",
        "change:",
        *(f"  {line}" for line in a["preview"].splitlines()),
    ]
    if a["status"] != "pending":
        by = f" by {a['approver']}" if a["approver"] else ""
        why = f": {a['decided_reason']}" if a["decided_reason"] else ""
        lines.append(f"decided   {a['status']}{by} at {a['decided_at']}{why}")
    return "\n".join(lines)


def decide(
    verb: str, approval_id: str, reason: str, token: str | None, url: str | None, state_dir: Path
) -> None:
    a = call(
        "POST",
        f"/approvals/{quote(approval_id, safe='')}/{verb}",
        token=token,
        url=api_url(url, state_dir),
        body={"reason": reason},
    )
    typer.echo(f"{a['status']} {a['id']} (ticket {a['ticket_id']}, {a['tool']}) as {a['approver']}")
    if not a["published"]:
        typer.echo("the decision is recorded; the escalation service publishes it once the broker answers")


@app.command()
def approve(
    approval_id: str,
    reason: Annotated[str, typer.Option(help="why (kept with the decision)")] = "",
    token: Token = None,
    url: Url = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Approve: policy then releases exactly this action (if its bundle still agrees)."""
    decide("approve", approval_id, reason, token, url, state_dir)


@app.command()
def reject(
    approval_id: str,
    reason: Annotated[str, typer.Option(help="why (required; shown in the handoff)")],
    token: Token = None,
    url: Url = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Reject: the action is not taken and the ticket is handed to a human."""
    if not reason.strip():
        fail("a rejection needs a reason (--reason)")
    decide("reject", approval_id, reason, token, url, state_dir)
