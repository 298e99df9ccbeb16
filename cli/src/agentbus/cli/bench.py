"""`agentbus bench`: benchmarks that print figures against DESIGN §8's targets (not tests)."""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Annotated

import typer

from . import killbench
from .options import fail
from .stack import Stack

app = typer.Typer(help="Benchmarks on a fresh embedded stack; they print figures, they do not assert.")


@app.command("kill-switch")
def kill_switch(
    tickets: Annotated[int, typer.Option(min=1, help="refund tickets in the run")] = 500,
    kill_at: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="engage after this share of the tickets' executions")
    ] = 0.3,
    hold: Annotated[float, typer.Option(min=0.5, help="seconds the switch stays engaged")] = 3.0,
) -> None:
    """Engage a kill switch on the executor's input topic mid-run: time to halt, then resume and
    check every ticket completes once. Uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set."""
    # A SIGTERM (timeout, CI) must still stop the stack's processes: they run in their own sessions.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="agentbus-bench-") as tmp:
        stack = Stack.from_env(Path(tmp), topic_prefix=f"bench-{uuid.uuid4().hex[:8]}.")
        try:
            typer.echo("starting the stack…")
            asyncio.run(stack.start())
            report = asyncio.run(
                killbench.run(
                    stack.settings(), tickets=tickets, kill_at=kill_at, hold_s=hold, progress=typer.echo
                )
            )
        except TimeoutError as exc:
            fail(f"the run did not finish: {exc}")
        finally:
            stack.stop()
    for line in report.render():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)
