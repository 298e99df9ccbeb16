"""Verifier handler: actions.executed → actions.verified (+ escalations.requested when it fails)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import httpx
from agentbus.shared.answers import answer
from agentbus.shared.bus import Bus
from agentbus.shared.events import (
    ActionExecutedV1,
    ActionVerifiedV1,
    EscalationRequest,
    EscalationRequestedV2,
    Event,
    Verification,
)
from agentbus.shared.tools import ToolRegistry, load_registry

from .checks import CHECKS, http_read_back


class VerifierHandlers:
    def __init__(self, bus: Bus, registry: ToolRegistry | None = None) -> None:
        self.bus = bus
        self.registry = registry or load_registry()
        self.http = httpx.AsyncClient()
        self.pool: asyncpg.Pool | None = None

    async def on_action_executed(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionExecutedV1)
        assert self.pool is not None, "verifier not started"
        ex = event.payload
        if ex.status == "refused":
            check, ok, evidence = "executor_accepted", False, {"refused": ex.error}
        elif ex.status == "failed":
            check, ok, evidence = "tool_succeeded", False, {"error": ex.error}
        elif (spec := self.registry.get(ex.tool)) is None:
            check, ok, evidence = "known_tool", False, {"error": f"{ex.tool} is not in the tool registry"}
        elif spec.http_check is not None:
            check = "http_read_back"
            ok, evidence = await http_read_back(self.http, spec.http_check, ex)
        elif spec.check in CHECKS:
            check = spec.check
            ok, evidence = await CHECKS[check](self.pool, ex)
        else:
            check, ok, evidence = spec.check, False, {"error": f"no post-condition named {spec.check!r}"}
        verified = answer(
            event,
            ActionVerifiedV1,
            Verification(
                action_id=ex.action_id,
                tool=ex.tool,
                verified=ok,
                check=check,
                evidence=evidence,
                result=ex.result,
            ),
            self.bus.producer,
        )
        if ok:
            return [verified]
        reason = {"failed": "tool_failed", "refused": "action_refused"}.get(ex.status, "verification_failed")
        escalation = answer(
            verified,
            EscalationRequestedV2,
            EscalationRequest(
                reason=reason,
                summary=(
                    f"Ticket {event.ticket_id}: {ex.tool} ({ex.action_id}) did not take effect as "
                    f"expected (check {check}). Evidence: {evidence}."
                ),
                details={"execution": ex.model_dump(mode="json"), "evidence": evidence},
                rule_ids=[f"verifier.{check}"],
            ),
            self.bus.producer,
        )
        return [verified, escalation]
