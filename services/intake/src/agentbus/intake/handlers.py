"""Intake handler: tickets.received → tasks.classified (+ escalations.requested when ineligible)."""

from __future__ import annotations

from collections.abc import Sequence

from agentbus.shared.bus import Bus
from agentbus.shared.events import (
    EscalationRequest,
    EscalationRequestedV1,
    Event,
    TaskClassifiedV1,
    TicketReceivedV1,
)

from . import rules


def make_handlers(bus: Bus):
    async def on_ticket_received(event: Event) -> Sequence[Event]:
        assert isinstance(event, TicketReceivedV1)
        ticket = event.payload
        task = rules.classify(ticket)
        classified = event.answer(TaskClassifiedV1, task, bus.producer)
        if task.eligible:
            return [classified]
        reason = "out_of_scope" if task.workflow is None else "not_eligible"
        escalation = classified.answer(
            EscalationRequestedV1,
            EscalationRequest(
                reason=reason,
                summary=rules.ineligibility_summary(ticket, task),
                details={
                    "intent": task.intent,
                    "language": task.language,
                    "subject": ticket.subject,
                    **({"facts": task.facts} if task.facts else {}),
                },
                rule_ids=task.reasons,
            ),
            bus.producer,
        )
        return [classified, escalation]

    return on_ticket_received
