"""Executor handler: actions.decided (allow, with a valid capability) → run the tool once per
idempotency key, under its declared timeout, retries and circuit breaker → actions.executed."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import httpx
from agentbus.shared.answers import answer_id
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import CapabilityError, Verifier
from agentbus.shared.control import describe
from agentbus.shared.events import ActionDecidedV1, ActionExecutedV1, Event, Execution, Proposal
from agentbus.shared.redaction import redact
from agentbus.shared.tools import ToolRegistry, ToolSpec, load_registry

from . import http_tool
from .runner import Outcome, Runner
from .store import EffectLedger
from .tools import BUILTINS

# Test hook for the crash suite: SIGKILL this process right after a tool call returned and before
# its result is committed to the ledger, with this probability. Never set in production.
CRASH_AFTER_CALL = float(os.environ.get("AGENTBUS_CHAOS_KILL_AFTER_CALL", "0") or 0)


class ExecutorHandlers:
    def __init__(
        self,
        bus: Bus,
        verifier: Verifier | None = None,
        registry: ToolRegistry | None = None,
        groups: set[str] | None = None,
    ) -> None:
        self.bus = bus
        self.verifier = verifier
        self.registry = registry or load_registry()
        self.groups = groups  # None: every tool group
        self.runner = Runner()
        self.http = httpx.AsyncClient()
        self.pool: asyncpg.Pool | None = None
        self.ledger: EffectLedger | None = None

    def handles(self, tool: str) -> bool:
        spec = self.registry.get(tool)
        group = spec.group if spec else "unregistered"
        return self.groups is None or group in self.groups

    async def on_action_decided(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionDecidedV1)
        decision = event.payload
        if decision.verdict != "allow" or decision.rollout == "shadow":
            return []  # shadow mode: the decision is the record of what would have run
        proposal = decision.proposal
        if not self.handles(proposal.tool):
            return []  # another tool group's executor acts on it
        assert self.pool is not None and self.ledger is not None, "executor not started"
        assert self.verifier is not None, "executor has no verification keys"
        started = time.perf_counter()
        if switch := self.bus.switches.refusing(
            tool=proposal.tool, agent=proposal.agent, tenant=event.tenant_id
        ):
            # Refused before the capability is used or the ledger claimed: nothing was attempted.
            return [self._executed(event, proposal, "refused", {}, describe(switch), started)]
        try:
            claims = self.verifier.verify(decision.capability, proposal, event.tenant_id)
            if not await self.ledger.use_capability(claims.jti, proposal.action_id, event.event_id):
                raise CapabilityError("capability already used by another decision event (replay)")
        except CapabilityError as exc:
            if not await self._accepted_before(event, proposal):
                # Refused, and said so: the trace shows the attempt; nothing touches a system of record.
                return [self._executed(event, proposal, "refused", {}, str(exc), started)]

        key = proposal.idempotency_key
        effect = await self.ledger.claim(key, proposal.action_id, proposal.tool)
        if effect.status in ("succeeded", "failed"):
            stored = effect.result or {}
            return [
                self._executed(event, proposal, effect.status, stored, effect.error, started, duplicate=True)
            ]
        # A fresh claim, or 'started'/'unknown' left by a crash or a timeout: call again with the
        # same key; the system of record's idempotency turns a repeat into the first effect.
        outcome = await self._call(proposal)
        if CRASH_AFTER_CALL and random.random() < CRASH_AFTER_CALL:
            os.kill(os.getpid(), signal.SIGKILL)
        await self.ledger.settle(key, outcome.status, outcome.result, outcome.error)
        status = "succeeded" if outcome.status == "succeeded" else "failed"
        return [self._executed(event, proposal, status, outcome.result, outcome.error, started)]

    async def _accepted_before(self, event: ActionDecidedV1, proposal: Proposal) -> bool:
        """This very decision event used its capability here before and is back after the capability
        expired (a re-drive, a late redelivery): it is answered from the ledger like any redelivery.
        The signature and the binding to this action must still hold; only the clock moved on."""
        assert self.verifier is not None and self.ledger is not None
        try:
            # now=0: any moment before the expiry.
            claims = self.verifier.verify(event.payload.capability, proposal, event.tenant_id, now=0.0)
        except CapabilityError:
            return False
        return await self.ledger.capability_user(claims.jti) == event.event_id

    async def _call(self, proposal: Proposal) -> Outcome:
        spec = self.registry.get(proposal.tool)
        if spec is None:
            return Outcome("failed", {}, f"no tool named {proposal.tool!r} in the registry", 0)
        call = self._callable(spec, dict(proposal.args), proposal.idempotency_key)
        if call is None:
            return Outcome("failed", {}, f"no implementation for built-in tool {spec.name!r}", 0)
        return await self.runner.run(spec, call)

    def _callable(
        self, spec: ToolSpec, args: dict[str, Any], key: str
    ) -> Callable[[], Awaitable[dict[str, Any]]] | None:
        if spec.http is not None:
            http = spec.http
            return lambda: http_tool.call(self.http, http, args, key, spec.timeout_s)
        builtin = BUILTINS.get(spec.name)
        if builtin is None:
            return None
        pool = self.pool
        assert pool is not None
        return lambda: builtin(pool, args, key)

    def _executed(
        self,
        cause: ActionDecidedV1,
        proposal: Proposal,
        status: str,
        result: dict[str, Any],
        error: str | None,
        started: float,
        *,
        duplicate: bool = False,
    ) -> ActionExecutedV1:
        execution = Execution(
            action_id=proposal.action_id,
            tool=proposal.tool,
            args=proposal.args,
            idempotency_key=proposal.idempotency_key,
            status=status,  # type: ignore[arg-type]
            result=redact(result),  # nothing secret or personal leaves the executor
            error=error,
            duplicate=duplicate,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        # A redelivered decision gets the answer it got before (same event id). Refusals depend on the
        # moment (a kill switch, the capability's expiry), so a refusal and a run never share an id.
        kind = f"{ActionExecutedV1.TYPE}/{'refused' if status == 'refused' else 'ran'}"
        event_id = answer_id(cause, self.bus.service, kind)
        return cause.answer(ActionExecutedV1, execution, self.bus.producer, event_id=event_id)
