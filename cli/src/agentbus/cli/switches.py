"""`agentbus kill`, `resume` and `switches`: operators engage and release kill switches."""

from __future__ import annotations

import asyncio
import getpass
import os
from pathlib import Path
from typing import Annotated

import orjson
import typer
from agentbus.shared.control import SCOPES, ControlListener, SwitchBoard, normalise_target, switch_change
from agentbus.shared.events import ControlSwitchV1, Switch
from agentbus.shared.kafka_clients import client_security_kwargs
from agentbus.shared.settings import Settings

from . import client
from .options import DEFAULT_STATE, StateDir, connection, fail

Target = Annotated[str, typer.Argument(help="topic name, tool, agent (agent:refunds), tenant id, or 'all'")]
Reason = Annotated[str, typer.Option("--reason", help="why: recorded in the audit trail")]
Actor = Annotated[
    str | None, typer.Option("--actor", help="who flips it (default operator:<login>)", show_default=False)
]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def default_actor() -> str:
    return f"operator:{getpass.getuser()}"


def switch_event(scope: str, target: str, *, engaged: bool, reason: str, actor: str) -> ControlSwitchV1:
    try:
        return switch_change(
            scope, target, engaged=engaged, reason=reason, actor=actor, producer=client.CLI_PRODUCER
        )
    except ValueError as exc:
        fail(f"--{exc}")


def flip(
    state_dir: Path, scope: str, target: str, *, engaged: bool, reason: str, actor: str | None
) -> ControlSwitchV1:
    """Validate, then publish the change; bad input fails before anything is contacted."""
    prefix = os.environ.get("AGENTBUS_TOPIC_PREFIX", "")
    try:
        target = normalise_target(scope, target, prefix)
    except ValueError as exc:
        fail(str(exc))
    event = switch_event(scope, target, engaged=engaged, reason=reason, actor=actor or default_actor())
    asyncio.run(client.publish(connection(state_dir, needs_database=False), [event]))
    return event


async def engaged_switches(settings: Settings) -> list[Switch]:
    """The switches in force, read from the control topic as every service reads it."""
    board = SwitchBoard()
    listener = ControlListener(settings, board, client_kwargs=client_security_kwargs(settings))
    await listener.start()
    await listener.stop()
    return sorted(board.engaged.values(), key=lambda s: (s.scope, s.target))


def kill(
    scope: Annotated[str, typer.Argument(help=f"one of {', '.join(SCOPES)}")],
    target: Target,
    reason: Reason,
    actor: Actor = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Engage a kill switch: consumers of a topic pause; executors refuse a tool, agent or tenant."""
    event = flip(state_dir, scope, target, engaged=True, reason=reason, actor=actor)
    s = event.payload
    typer.echo(f"engaged {s.scope} {s.target} (event {event.event_id}, by {s.actor})")


def resume(
    scope: Annotated[str, typer.Argument(help=f"one of {', '.join(SCOPES)}")],
    target: Target,
    reason: Reason,
    actor: Actor = None,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Release a kill switch: paused consumers resume where they stopped."""
    event = flip(state_dir, scope, target, engaged=False, reason=reason, actor=actor)
    s = event.payload
    typer.echo(f"released {s.scope} {s.target} (event {event.event_id}, by {s.actor})")


def list_switches(as_json: AsJson = False, state_dir: StateDir = DEFAULT_STATE) -> None:
    """The kill switches engaged now."""
    engaged = asyncio.run(engaged_switches(connection(state_dir, needs_database=False)))
    if as_json:
        typer.echo(orjson.dumps([s.model_dump(mode="json") for s in engaged]).decode())
        return
    if not engaged:
        typer.echo("no kill switch engaged")
    for s in engaged:
        typer.echo(f"{s.scope:<7} {s.target:<36} by {s.actor}: {s.reason}")
