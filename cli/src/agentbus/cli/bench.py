"""`agentbus bench`: benchmarks that print figures against DESIGN §8's targets (not tests)."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import killbench, pipebench
from .options import fail
from .stack import throwaway_stack

app = typer.Typer()
DEFAULTS = pipebench.Config()


class Bar:
    """pipebench.Progress as a rich progress bar on stderr: a line per phase, notes between."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<26}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )

    def phase(self, description: str, total: int) -> Callable[[int], object]:
        task = self.progress.add_task(description, total=total)
        return lambda done: self.progress.update(task, completed=done)

    def note(self, message: str) -> None:
        self.progress.console.print(message)


@app.callback(invoke_without_command=True)
def pipeline(
    ctx: typer.Context,
    tickets: Annotated[
        int, typer.Option(min=1, help="tickets in each phase (max rate, fixed rate)")
    ] = DEFAULTS.tickets,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="offered tickets/s of the fixed-rate phase [default: half the pipeline's max]"
        ),
    ] = None,
    it_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of IT access tickets; the rest are refunds")
    ] = DEFAULTS.it_share,
    warmup: Annotated[
        int, typer.Option(min=0, help="tickets through each side before measuring")
    ] = DEFAULTS.warmup,
    sink_events: Annotated[
        int, typer.Option(min=1000, help="backlog the trace sink drains to measure events/s persisted")
    ] = DEFAULTS.sink_events,
    timeout: Annotated[float, typer.Option(min=1.0, help="seconds a phase may take")] = DEFAULTS.timeout,
    json_path: Annotated[Path | None, typer.Option("--json", help="also write the figures here")] = None,
) -> None:
    """The pipeline against a bare relay (DESIGN §8), on a fresh stack. Without a subcommand:
    refund and IT access tickets through every service, as fast as they go and then at a fixed
    offered rate; then, with the services stopped, the same tickets through a relay of as many
    Kafka hops (a process per hop: consume → parse → produce → commit) on the same broker.
    Prints throughput, end-to-end p50/p95/p99 and the ratios pipeline/relay, per-stage latency and
    handler time, trace-sink lag and events/s persisted (draining a backlog), peak RSS and CPU per
    process, each beside its DESIGN §8 target. With the defaults about 5 minutes on an idle
    2-core machine (the two fixed-rate phases take most of it), longer on a shared one.
    Uses DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS when set."""
    if ctx.invoked_subcommand is not None:
        return
    config = pipebench.Config(
        tickets=tickets, rate=rate, it_share=it_share, warmup=warmup, sink_events=sink_events, timeout=timeout
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    bar = Bar()
    try:
        with throwaway_stack("bench", pipebench.stack_env(config)) as stack, bar.progress:
            bar.note("starting the stack…")
            asyncio.run(stack.start())
            report = asyncio.run(pipebench.run(stack, config, bar))
    except TimeoutError as exc:
        fail(f"the run did not finish: {exc}")
    for line in report.render():
        typer.echo(line)
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2))


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
    try:
        with throwaway_stack("bench") as stack:
            typer.echo("starting the stack…")
            asyncio.run(stack.start())
            report = asyncio.run(
                killbench.run(
                    stack.settings(), tickets=tickets, kill_at=kill_at, hold_s=hold, progress=typer.echo
                )
            )
    except TimeoutError as exc:
        fail(f"the run did not finish: {exc}")
    for line in report.render():
        typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)
