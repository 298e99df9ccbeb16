"""Escalation handlers: escalations.requested → handoff + tasks.finished (escalated);
actions.decided (needs_approval) → a pending approval with its change preview, which expires
after `approval_ttl_s` (the approval desk decides and expires approvals)."""

from __future__ import annotations

from collections.abc import Sequence

from agentbus.shared.answers import answer
from agentbus.shared.bus import Bus
from agentbus.shared.events import (
    ActionDecidedV1,
    EscalationRequestedV2,
    Event,
    TaskFinishedV2,
    TaskOutcome,
)

from . import handoffs
from .store import EscalationStore


class EscalationHandlers:
    def __init__(
        self, bus: Bus, store: EscalationStore | None = None, *, approval_ttl_s: float = 3600.0
    ) -> None:
        self.bus = bus
        self.store = store
        self.approval_ttl_s = approval_ttl_s

    async def on_escalation_requested(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, EscalationRequestedV2) and event.ticket_id
        assert self.store is not None, "escalation store not opened"
        request = event.payload
        hid = await self.store.add_handoff(
            {
                "id": handoffs.handoff_id(event.ticket_id, request.reason),
                "ticket_id": event.ticket_id,
                "tenant_id": event.tenant_id,
                "reason": request.reason,
                "summary": request.summary,
                "details": request.details,
                "rule_ids": request.rule_ids,
            }
        )
        outcome = TaskOutcome(
            outcome="escalated", summary=request.summary, handoff_id=hid, usage=request.usage
        )
        return [answer(event, TaskFinishedV2, outcome, self.bus.producer)]

    async def on_action_decided(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionDecidedV1) and event.ticket_id
        decision = event.payload
        if decision.verdict != "needs_approval":
            return []
        assert self.store is not None, "escalation store not opened"
        proposal = decision.proposal
        await self.store.add_approval(
            {
                "id": handoffs.approval_id(proposal.action_id),
                "action_id": proposal.action_id,
                "ticket_id": event.ticket_id,
                "tenant_id": event.tenant_id,
                "proposal": proposal.model_dump(mode="json"),
                "preview": handoffs.preview(proposal),
                "required_role": decision.approver_role or "approver",
                "reason": decision.reason,
                # Kept so the decision can answer it: same ticket, tenant, trace; the next step.
                "decision_event": event.model_dump(mode="json"),
            },
            ttl_s=self.approval_ttl_s,
        )
        return []
