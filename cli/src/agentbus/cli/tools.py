"""`agentbus tools list`: the tool registry as the planner, policy and executors see it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import orjson
import typer
from agentbus.shared.tools import ToolRegistryError, load_registry

from .stack import repo_root

app = typer.Typer(help="The tool registry: every tool declared once.")


@app.command("list")
def list_tools(
    as_json: Annotated[bool, typer.Option("--json", help="full declarations as JSON")] = False,
    tools_dir: Annotated[
        Path | None, typer.Option(help="extra declarations (default AGENTBUS_TOOLS_DIR)")
    ] = None,
) -> None:
    """Name, writes or reads, group, timeout, retries, post-condition and argument schema."""
    directory = tools_dir or Path(os.environ.get("AGENTBUS_TOOLS_DIR") or repo_root() / "tools")
    try:
        registry = load_registry(directory)
    except ToolRegistryError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        rows = [
            {
                "name": t.name,
                "description": t.description,
                "group": t.group,
                "writes": t.writes,
                "kind": t.kind,
                "timeout_s": t.timeout_s,
                "retry": t.retry.__dict__,
                "check": t.check,
                "args": t.args_schema,
                "result": t.result_schema,
                "source": t.source,
            }
            for t in registry
        ]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(
        f"{'tool':<32} {'access':<6} {'group':<10} {'kind':<7} {'timeout':>7} {'tries':>5}  check / arguments"
    )
    for t in registry:
        access = "writes" if t.writes else "reads"
        timing = f"{t.timeout_s:>6g}s {t.retry.max_attempts:>5}"
        typer.echo(f"{t.name:<32} {access:<6} {t.group:<10} {t.kind:<7} {timing}  {t.check}")
        typer.echo(f"{'':<32} args {orjson.dumps(t.args_schema).decode()}")
