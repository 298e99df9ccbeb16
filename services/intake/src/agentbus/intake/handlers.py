"""Intake handler: tickets.received → tasks.classified (+ escalations.requested when ineligible).

Personal data is replaced by vault tokens first: the classifier, the model and every topic after
this one see only tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agentbus.shared.answers import answer
from agentbus.shared.bus import Bus
from agentbus.shared.events import (
    EscalationRequest,
    EscalationRequestedV2,
    Event,
    PiiRef,
    TaskClassifiedV2,
    TicketReceived,
    TicketReceivedV1,
    Usage,
)
from agentbus.shared.pii import Protected

from . import rules

if TYPE_CHECKING:  # the model client (openai) loads only when a models file is configured
    from .classifier import ModelClassifier


class Protector(Protocol):
    async def protect(self, tenant_id: str, subject_id: str, texts: Mapping[str, str]) -> Protected: ...


def _strings(value: Any, path: str, out: dict[str, str]) -> None:
    """Every string inside `value`, keyed by its path, so metadata is protected too."""
    if isinstance(value, str):
        out[path] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            _strings(v, f"{path}.{k}", out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _strings(v, f"{path}.{i}", out)


def _rebuild(value: Any, path: str, texts: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return texts[path]
    if isinstance(value, dict):
        return {k: _rebuild(v, f"{path}.{k}", texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebuild(v, f"{path}.{i}", texts) for i, v in enumerate(value)]
    return value


async def protect_ticket(vault: Protector, ticket: TicketReceived) -> tuple[TicketReceived, list[PiiRef]]:
    """The ticket with PII in subject, body, customer email and metadata replaced by tokens; the
    data subject is the customer."""
    texts = {"subject": ticket.subject, "body": ticket.body, "email": ticket.customer.email}
    _strings(ticket.metadata, "metadata", texts)
    protected = await vault.protect(ticket.tenant_id, ticket.customer.id, texts)
    out = protected.texts
    safe = ticket.model_copy(
        update={
            "subject": out["subject"],
            "body": out["body"],
            "customer": ticket.customer.model_copy(update={"email": out["email"]}),
            "metadata": _rebuild(ticket.metadata, "metadata", out),
        }
    )
    refs = [PiiRef(token=token, kind=kind) for token, kind in protected.tokens]  # type: ignore[arg-type]
    return safe, refs


class Intake:
    def __init__(
        self, bus: Bus, vault: Protector | None = None, classifier: ModelClassifier | None = None
    ) -> None:
        self.bus = bus
        self.vault = vault  # the app opens it on start-up, before any ticket is consumed
        self.classifier = classifier

    async def on_ticket_received(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, TicketReceivedV1)
        assert self.vault is not None, "intake's PII vault is not open"
        ticket, pii = await protect_ticket(self.vault, event.payload)
        hint, calls, reasons = None, [], []
        if self.classifier is not None:
            result = await self.classifier.classify(ticket)
            hint, reasons = result.hint, [result.reason]
            calls = [result.call] if result.call else []
        task = rules.classify(ticket, hint=hint)
        usage = sum((c.usage for c in calls), Usage())
        task = task.model_copy(
            update={
                "reasons": [*reasons, *task.reasons],
                "body": ticket.body,
                "pii": pii,
                "model_calls": calls,
                "usage": usage,
            }
        )
        envelope: dict[str, Any] = {}
        if calls:
            envelope = {"model": calls[0].model, "prompt_version": calls[0].prompt_version}
        classified = answer(event, TaskClassifiedV2, task, self.bus.producer, **envelope)
        if task.eligible:
            return [classified]
        reason = "out_of_scope" if task.workflow is None else "not_eligible"
        escalation = answer(
            classified,
            EscalationRequestedV2,
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
                usage=usage,
            ),
            self.bus.producer,
        )
        return [classified, escalation]
