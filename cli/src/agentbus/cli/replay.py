"""`agentbus replay`: re-drive stored events into a stage, or re-decide them under another policy."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Replay from the audit store: re-drive events into a stage, or re-decide them counterfactually.",
    no_args_is_help=True,
)
