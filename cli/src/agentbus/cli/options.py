"""What every `agentbus` command shares: the state-dir option, the connection, how a command fails."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from agentbus.shared.settings import Settings

from .runtime import RuntimeInfo

StateDir = Annotated[
    Path, typer.Option(envvar="AGENTBUS_STATE_DIR", help="where `up` keeps logs and runtime.json")
]
DEFAULT_STATE = Path(".agentbus")


def fail(message: str, prefix: str = "error") -> NoReturn:
    """Print what to fix and exit 2 (bad input or nothing to talk to)."""
    typer.secho(f"{prefix}: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def connection(state_dir: Path, *, needs_database: bool = True) -> Settings:
    """Broker and database from the environment, else from the stack `agentbus up` started. Commands
    that only talk to the broker (kill switches) pass needs_database=False."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    database = os.environ.get("DATABASE_URL")
    prefix = os.environ.get("AGENTBUS_TOPIC_PREFIX", "")
    info = RuntimeInfo.load(state_dir / "runtime.json")
    if info is not None:
        bootstrap = bootstrap or info.bootstrap
        database = database or info.database_url
        prefix = prefix or info.topic_prefix
    if not bootstrap or (needs_database and not database):
        fail(
            "no running stack found: start one with `agentbus up` (or `make run`), or set "
            "KAFKA_BOOTSTRAP_SERVERS" + (" and DATABASE_URL" if needs_database else "")
        )
    return Settings(
        service="cli", kafka_bootstrap_servers=bootstrap, database_url=database, topic_prefix=prefix
    )
