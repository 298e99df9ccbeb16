"""Kill switches: the state held on the compacted control topic, and the listener every service runs.

A switch is keyed `<scope>:<target>` on the control topic, so compaction keeps the latest change of
each switch and a restarted service reads the whole state back from offset 0 before it consumes
anything. Scopes (DESIGN §4): `topic` (consumers of the topic pause their partitions), `tool`,
`agent` and `tenant` (executors refuse matching actions), `global` (every stage pauses everything).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from . import topics
from .events import ControlSwitchV1, DecodeError, Producer, Switch, decode
from .settings import Settings
from .topics import CONTROL, topic_name

log = logging.getLogger("agentbus.control")

SCOPES = ("topic", "tool", "agent", "tenant", "global")
GLOBAL_TARGET = "all"
CONTROL_FETCH_WAIT_MS = 50


def switch_key(switch: Switch) -> str:
    """The control topic's message key: one compacted slot per switch."""
    return f"{switch.scope}:{switch.target}"


class SwitchBoard:
    """The engaged switches, as last written on the control topic."""

    def __init__(self) -> None:
        self.engaged: dict[str, Switch] = {}

    def apply(self, switch: Switch) -> bool:
        """Record a change; True when it changed what is engaged."""
        key = switch_key(switch)
        if switch.engaged:
            changed = key not in self.engaged
            self.engaged[key] = switch
            return changed
        return self.engaged.pop(key, None) is not None

    def halting(self, topic: str) -> Switch | None:
        """The switch that stops consumption of `topic` (its name without the environment prefix)."""
        return self.engaged.get(f"topic:{topic}") or self.engaged.get(f"global:{GLOBAL_TARGET}")

    def refusing(self, *, tool: str, agent: str, tenant: str | None) -> Switch | None:
        """The switch that forbids running `tool` as `agent` for `tenant`, if any."""
        for key in (f"tool:{tool}", f"agent:{agent}", f"tenant:{tenant}", f"global:{GLOBAL_TARGET}"):
            if key in self.engaged:
                return self.engaged[key]
        return None


def describe(switch: Switch) -> str:
    return f"kill switch {switch.scope} {switch.target} engaged by {switch.actor}: {switch.reason}"


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
        from .tools import load_registry

        registry = load_registry()
        if registry.get(target) is None:
            known = ", ".join(sorted(t.name for t in registry))
            raise ValueError(f"no tool named {target!r} in the registry: use one of {known}")
    if scope == "agent" and not target.startswith("agent:"):
        raise ValueError(f"agents are principals such as agent:refunds, not {target!r}")
    return target


def switch_change(
    scope: str, target: str, *, engaged: bool, reason: str, actor: str, producer: Producer
) -> ControlSwitchV1:
    """The control event that engages or releases a switch (target already normalised); raises
    ValueError when the reason is blank: it is what the audit trail keeps."""
    if not reason.strip():
        raise ValueError("reason must say why (it is recorded in the audit trail)")
    switch = Switch(scope=scope, target=target, engaged=engaged, reason=reason.strip(), actor=actor)  # type: ignore[arg-type]
    return ControlSwitchV1(producer=producer, payload=switch)


class ControlListener:
    """Follows the control topic from its beginning and keeps a SwitchBoard current.

    No consumer group: every process must see every switch, and none may skip one by sharing
    offsets. `start()` returns once the state up to the topic's end at that moment is loaded, so a
    restarted service never acts on a message a switch already stopped.
    """

    def __init__(
        self,
        settings: Settings,
        board: SwitchBoard,
        on_change: Callable[[Switch], Any] | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.board = board
        self.on_change = on_change
        self.partition = TopicPartition(topic_name(CONTROL, settings.topic_prefix), 0)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            # A wiped broker restarts the topic at offset 0: read it again from there, not its end.
            auto_offset_reset="earliest",
            # The control topic is idle nearly always; polling it as eagerly as a work topic costs the
            # broker a fetch every few ms per process. 50 ms keeps the halt well inside its target.
            fetch_max_wait_ms=max(settings.fetch_max_wait_ms, CONTROL_FETCH_WAIT_MS),
            **dict(client_kwargs or {}),
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        await self.consumer.start()
        try:
            self.consumer.assign([self.partition])
            await self.consumer.seek_to_beginning(self.partition)
            end = (await self.consumer.end_offsets([self.partition]))[self.partition]
            async with asyncio.timeout(timeout):
                while await self.consumer.position(self.partition) < end:
                    await self._poll()
        except BaseException:
            await self.consumer.stop()
            raise
        self._task = asyncio.create_task(self._follow(), name="control-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()

    async def _follow(self) -> None:
        while True:
            try:
                await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The broker may be gone for a while; the switches held so far stay in force.
                log.exception("control topic poll failed; retrying")
                await asyncio.sleep(1.0)

    async def _poll(self) -> None:
        batches = await self.consumer.getmany(self.partition, timeout_ms=200)
        for record in batches.get(self.partition, []):
            if record.value is None:
                continue  # a tombstone: compaction's way of forgetting a key
            try:
                event = decode(record.value)
            except DecodeError as exc:
                log.warning("ignoring a bad control record at offset %s: %s", record.offset, exc)
                continue
            if not isinstance(event, ControlSwitchV1):
                continue
            if self.board.apply(event.payload):
                state = "engaged" if event.payload.engaged else "released"
                log.warning(
                    "kill switch %s %s %s by %s",
                    switch_key(event.payload),
                    state,
                    f"({event.payload.reason})",
                    event.payload.actor,
                )
                if self.on_change is not None:
                    self.on_change(event.payload)
