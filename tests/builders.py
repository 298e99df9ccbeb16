"""Builders for minimal valid agentbus events and payloads, shared by unit and contract tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from agentbus.shared.events import (
    ActionDecidedV1,
    ActionExecutedV1,
    ActionProposedV1,
    ActionVerifiedV1,
    ApprovalDecidedV1,
    ApprovalDecision,
    ControlSwitchV1,
    DeadLetter,
    DeadLetterRecordedV1,
    Decision,
    EscalationRequest,
    EscalationRequestedV2,
    Event,
    Execution,
    Producer,
    Proposal,
    Switch,
    TaskClassified,
    TaskClassifiedV2,
    TaskFinishedV2,
    TaskOutcome,
    TicketReceived,
    TicketReceivedV1,
    Verification,
    legacy,
)

PRODUCER = Producer(service="tests", version="0.0.0", instance="pytest-1")
TENANT = "acme"
CUSTOMER = "C-1"


def ticket(**overrides: Any) -> TicketReceived:
    """A refund ticket for ORD-1001 unless overridden."""
    data: dict[str, Any] = {
        "ticket_id": "T-1",
        "tenant_id": TENANT,
        "channel": "email",
        "customer": {"id": CUSTOMER, "email": "dana@example.com"},
        "subject": "Refund for ORD-1001",
        "body": "Hello, the item is not what I wanted. Please refund me.",
        "order_id": "ORD-1001",
    }
    data.update(overrides)
    return TicketReceived.model_validate(data)


def ticket_dict(**overrides: Any) -> dict[str, Any]:
    return ticket(**overrides).model_dump(mode="json")


def proposal(**overrides: Any) -> Proposal:
    data: dict[str, Any] = {
        "action_id": "act-T-1-1",
        "workflow": "refunds",
        "agent": "agent:refunds",
        "tool": "payments.issue_refund",
        "args": {"order_id": "ORD-1001", "amount_cents": 2000, "currency": "USD"},
        "idempotency_key": "acme:T-1:1:payments.issue_refund",
    }
    data.update(overrides)
    return Proposal.model_validate(data)


def payloads() -> dict[type[Event], Any]:
    """One minimal valid payload per event model."""
    prop = proposal()
    classified = TaskClassified(
        intent="refund_request",
        workflow="refunds",
        language="en",
        eligible=True,
        risk_tier="medium",
        reasons=["intake.intent.refund_keywords"],
        customer_id=CUSTOMER,
        order_id="ORD-1001",
        subject="Refund for ORD-1001",
        channel="email",
    )
    v1_fields = set(legacy.TaskClassified.model_fields)
    return {
        TicketReceivedV1: ticket(),
        legacy.TaskClassifiedV1: legacy.TaskClassified(
            **{k: v for k, v in classified.model_dump().items() if k in v1_fields}
        ),
        legacy.TaskFinishedV1: legacy.TaskOutcome(outcome="resolved", summary="done"),
        legacy.EscalationRequestedV1: legacy.EscalationRequest(
            reason="out_of_scope", summary="a human should answer"
        ),
        TaskClassifiedV2: classified,
        ActionProposedV1: prop,
        ActionDecidedV1: Decision(
            proposal=prop, verdict="allow", rule_ids=["refund.autonomous"], reason="§3.1"
        ),
        ActionExecutedV1: Execution(
            action_id=prop.action_id,
            tool=prop.tool,
            args=prop.args,
            idempotency_key=prop.idempotency_key,
            status="succeeded",
            result={"refund_id": "RF-1"},
        ),
        ActionVerifiedV1: Verification(
            action_id=prop.action_id, tool=prop.tool, verified=True, check="refund_recorded"
        ),
        TaskFinishedV2: TaskOutcome(outcome="resolved", summary="done"),
        EscalationRequestedV2: EscalationRequest(reason="out_of_scope", summary="a human should answer"),
        ApprovalDecidedV1: ApprovalDecision(
            approval_id="APR-1",
            proposal=prop,
            approved=True,
            approver="user:alice",
            role="refund-approver",
        ),
        ControlSwitchV1: Switch(
            scope="tool",
            target="payments.issue_refund",
            engaged=True,
            reason="test",
            actor="user:ops",
        ),
        DeadLetterRecordedV1: DeadLetter(
            source_topic="tickets.received",
            partition=0,
            offset=7,
            original_b64="e30=",
            reason="not JSON",
            error_type="malformed",
            consumer="intake",
        ),
    }


def event(model: type[Event], payload: Any = None, **envelope: Any) -> Event:
    """A minimal valid instance of `model` for ticket T-1 (payload from `payloads()` by default)."""
    fields: dict[str, Any] = {"ticket_id": "T-1", "tenant_id": TENANT, "producer": PRODUCER}
    fields.update(envelope)
    return model(payload=payloads()[model] if payload is None else payload, **fields)


def order_result(**overrides: Any) -> dict[str, Any]:
    """What executor.tools.get_order returns for a found, delivered, unrefunded $20 order."""
    data: dict[str, Any] = {
        "found": True,
        "order_id": "ORD-1001",
        "status": "delivered",
        "amount_cents": 2000,
        "currency": "USD",
        "customer_matches": True,
        "refunded_cents": 0,
    }
    data.update(overrides)
    return data


def allowed(
    signer: Any, proposal: Proposal, ticket_id: str = "T-1", tenant_id: str = TENANT
) -> ActionDecidedV1:
    """An allow for `proposal` carrying a capability signed by `signer`, as the decider issues it."""
    decision = Decision(
        proposal=proposal,
        verdict="allow",
        rule_ids=["test"],
        reason="test",
        capability=signer.issue(proposal, tenant_id),
    )
    return ActionDecidedV1(ticket_id=ticket_id, tenant_id=tenant_id, producer=PRODUCER, payload=decision)


def needs_approval(**envelope: Any) -> ActionDecidedV1:
    """The decider's needs_approval for a $40 refund of ORD-1002 (§3.2, a refund approver)."""
    decision = Decision(
        proposal=proposal(args={"order_id": "ORD-1002", "amount_cents": 4000, "currency": "USD"}),
        verdict="needs_approval",
        rule_ids=["refund.needs_approval"],
        reason="Needs approval under §3.2",
        approver_role="refund-approver",
    )
    fields: dict[str, Any] = {"ticket_id": "T-1", "tenant_id": TENANT, "policy_version": "sha256:abc"}
    return ActionDecidedV1(producer=PRODUCER, payload=decision, **(fields | envelope))


def approval_row(decision: ActionDecidedV1, now: datetime, **overrides: Any) -> dict[str, Any]:
    """A pending escalation.approvals row for a needs_approval `decision`, created at `now`."""
    data: dict[str, Any] = {
        "id": "AP-0123456789",
        "action_id": decision.payload.proposal.action_id,
        "ticket_id": "T-1",
        "tenant_id": "acme",
        "proposal": decision.payload.proposal.model_dump(mode="json"),
        "preview": "payments.issue_refund as agent:refunds\n+ amount_cents = 4000",
        "required_role": "refund-approver",
        "reason": "Needs approval under §3.2",
        "status": "pending",
        "created_at": now,
        "expires_at": now + timedelta(hours=1),
        "decision_event": decision.model_dump(mode="json"),
        "approver": None,
        "decided_reason": None,
        "decided_at": None,
        "outcome_event": None,
        "published": False,
    }
    data.update(overrides)
    return data
