"""`agentbus kill`, `resume` and `switches`: operators engage and release kill switches."""

from __future__ import annotations

import asyncio
import getpass
import os
from pathlib import Path
from typing import Annotated

import orjson
import typer
from agentbus.shared import topics
from agentbus.shared.bus import client_security_kwargs
from agentbus.shared.control import GLOBAL_TARGET, SCOPES, ControlListener, SwitchBoard
from agentbus.shared.events import ControlSwitchV1, Switch
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


def normalise_target(scope: str, target: str, prefix: str = "") -> str:
    """The switch's target as services match it; raises ValueError saying what to fix."""
    target = target.strip()
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: use one of {', '.join(SCOPES)}")
    if scope == "global":
        if target not in (GLOBAL_TARGET, "*"):
            raise ValueError(f"the global switch has one target: {GLOBAL_TARGET!r}")
        return GLOBAL_TARGET
    if not target:
        raise ValueError(f"give the {scope} to stop")
    if scope == "topic":
        names = {t.name for t in topics.ALL_TOPICS}
        # Accept the full name, the name with this environment's prefix, or the short
        # `<domain>.<event>` form (actions.decided).
        for candidate in (target, target.removeprefix(prefix), f"agentbus.{target}.v1"):
            if candidate in names:
                if candidate in (topics.CONTROL.name,):
                    raise ValueError("the control topic cannot be stopped: it carries the switches")
                return candidate
        raise ValueError(f"unknown topic {target!r}: use one of {', '.join(sorted(names))}")
    if scope == "tool":
        from agentbus.shared.tools import load_registry

        registry = load_registry()
        if registry.get(target) is None:
            known = ", ".join(sorted(t.name for t in registry))
            raise ValueError(f"no tool named {target!r} in the registry: use one of {known}")
    if scope == "agent" and not target.startswith("agent:"):
        raise ValueError(f"agents are principals such as agent:refunds, not {target!r}")
    return target


def switch_event(scope: str, target: str, *, engaged: bool, reason: str, actor: str) -> ControlSwitchV1:
    if not reason.strip():
        fail("--reason must say why (it is recorded in the audit trail)")
    switch = Switch(scope=scope, target=target, engaged=engaged, reason=reason.strip(), actor=actor)  # type: ignore[arg-type]
    return ControlSwitchV1(producer=client.CLI_PRODUCER, payload=switch)


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
    asyncio.run(client.publish(connection(state_dir), [event]))
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
    engaged = asyncio.run(engaged_switches(connection(state_dir)))
    if as_json:
        typer.echo(orjson.dumps([s.model_dump(mode="json") for s in engaged]).decode())
        return
    if not engaged:
        typer.echo("no kill switch engaged")
    for s in engaged:
        typer.echo(f"{s.scope:<7} {s.target:<36} by {s.actor}: {s.reason}")
