"""Executor handler: actions.decided (allow) → run the tool once per idempotency key → actions.executed."""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import CapabilityError, Verifier
from agentbus.shared.events import ActionDecidedV1, ActionExecutedV1, Event, Execution

from .store import EffectLedger
from .tools import TOOLS, ToolError


class ExecutorHandlers:
    def __init__(self, bus: Bus, verifier: Verifier | None = None) -> None:
        self.bus = bus
        self.verifier = verifier
        self.pool: asyncpg.Pool | None = None
        self.ledger: EffectLedger | None = None

    async def on_action_decided(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionDecidedV1)
        decision = event.payload
        if decision.verdict != "allow" or decision.rollout == "shadow":
            return []  # shadow mode: the decision is the record of what would have run
        assert self.pool is not None and self.ledger is not None, "executor not started"
        assert self.verifier is not None, "executor has no verification keys"
        proposal = decision.proposal
        key = proposal.idempotency_key
        started = time.perf_counter()
        try:
            claims = self.verifier.verify(decision.capability, proposal, event.tenant_id)
            if not await self.ledger.use_capability(claims.jti, proposal.action_id, event.event_id):
                raise CapabilityError("capability already used by another decision event (replay)")
        except CapabilityError as exc:
            # Refused, and said so: the trace shows the attempt; nothing touches a system of record.
            refusal = Execution(
                action_id=proposal.action_id,
                tool=proposal.tool,
                args=proposal.args,
                idempotency_key=key,
                status="refused",
                error=str(exc),
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            return [event.answer(ActionExecutedV1, refusal, self.bus.producer)]
        effect = await self.ledger.claim(key, proposal.action_id, proposal.tool)
        duplicate = effect.status in ("succeeded", "failed")
        if duplicate:
            status, result, error = effect.status, effect.result or {}, effect.error
        else:
            # A fresh claim, or a 'started' left by a crash: call again with the same key; the
            # system of record's own idempotency turns a repeat into the stored answer.
            tool = TOOLS.get(proposal.tool)
            try:
                if tool is None:
                    raise ToolError(f"no executor tool named {proposal.tool!r}")
                result = await tool.run(self.pool, dict(proposal.args), key)
                status, error = "succeeded", None
            except ToolError as exc:
                status, result, error = "failed", {}, str(exc)
            await self.ledger.settle(key, status, result, error)
        execution = Execution(
            action_id=proposal.action_id,
            tool=proposal.tool,
            args=proposal.args,
            idempotency_key=key,
            status=status,  # type: ignore[arg-type]
            result=result,
            error=error,
            duplicate=duplicate,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return [event.answer(ActionExecutedV1, execution, self.bus.producer)]
