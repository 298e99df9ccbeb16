"""What every `agentbus` command shares: the state-dir option and how a command fails."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

StateDir = Annotated[
    Path, typer.Option(envvar="AGENTBUS_STATE_DIR", help="where `up` keeps logs and runtime.json")
]
DEFAULT_STATE = Path(".agentbus")


def fail(message: str, prefix: str = "error") -> NoReturn:
    """Print what to fix and exit 2 (bad input or nothing to talk to)."""
    typer.secho(f"{prefix}: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)
