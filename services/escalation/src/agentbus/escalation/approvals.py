"""Approvals as people see and decide them: who may decide, the JSON view of an approval, and the
event a decision (approval.decided) or an expiry (escalation.requested) publishes. Pure functions
over approval rows: no HTTP, no SQL."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from agentbus.shared.events import (
    REGISTRY,
    ActionDecidedV1,
    ApprovalDecidedV1,
    ApprovalDecision,
    EscalationRequest,
    EscalationRequestedV2,
    Event,
    Producer,
    Proposal,
)
from agentbus.shared.identities import Identity

Status = Literal["pending", "approved", "rejected", "expired"]
STATUSES: tuple[Status, ...] = ("pending", "approved", "rejected", "expired")

Row = Mapping[str, Any]


def refusal(identity: Identity, row: Row, verb: str) -> str | None:
    """Why `identity` may not `verb` this approval, or None when it holds the required role."""
    role = row["required_role"]
    if role in identity.roles:
        return None
    return f"to {verb} {row['id']} you need role {role}; {identity.id} has roles: {identity.describe_roles()}"


def not_pending(row: Row, now: datetime) -> str | None:
    """Why this approval can no longer be decided, or None while it is pending and not overdue."""
    if row["status"] != "pending":
        by = f" by {row['approver']}" if row.get("approver") else ""
        when = f" at {_iso(row['decided_at'])}" if row.get("decided_at") else ""
        return f"approval {row['id']} is already {row['status']}{by}{when}"
    if row["expires_at"] <= now:
        return f"approval {row['id']} expired at {_iso(row['expires_at'])} and is being escalated"
    return None


def source_decision(row: Row) -> ActionDecidedV1 | None:
    """The needs_approval decision this approval answers (rows from before it was stored: None)."""
    stored = row.get("decision_event")
    return ActionDecidedV1.model_validate(stored) if stored else None


def decided_event(
    row: Row, *, approved: bool, identity: Identity, reason: str, producer: Producer
) -> ApprovalDecidedV1:
    """approval.decided for this row, answering policy's needs_approval decision: same ticket,
    tenant and trace, next step. The role is the one the approval required, which `identity`
    holds (checked by `refusal`); policy checks it again against its bundle."""
    payload = ApprovalDecision(
        approval_id=row["id"],
        proposal=Proposal.model_validate(row["proposal"]),
        approved=approved,
        approver=identity.id,
        role=row["required_role"],
        reason=reason,
    )
    source = source_decision(row)
    if source is not None:
        return source.answer(ApprovalDecidedV1, payload, producer)
    return ApprovalDecidedV1(
        ticket_id=row["ticket_id"], tenant_id=row["tenant_id"], producer=producer, payload=payload
    )


def expired_event(row: Row, *, producer: Producer) -> EscalationRequestedV2:
    """escalation.requested (approval_expired) for an approval nobody decided in time: the ticket
    goes to a human with the change that was never made."""
    proposal = Proposal.model_validate(row["proposal"])
    source = source_decision(row)
    summary = (
        f"Nobody with role {row['required_role']} approved or rejected {proposal.tool} for ticket "
        f"{row['ticket_id']} before approval {row['id']} expired at {_iso(row['expires_at'])}, so "
        f"nothing was changed. The change that was waiting for approval:\n{row['preview']}"
    )
    payload = EscalationRequest(
        reason="approval_expired",
        summary=summary,
        details={
            "approval_id": row["id"],
            "action_id": proposal.action_id,
            "tool": proposal.tool,
            "args": proposal.args,
            "required_role": row["required_role"],
            "expires_at": _iso(row["expires_at"]),
            "policy_reason": row["reason"],
        },
        rule_ids=list(source.payload.rule_ids) if source else [],
    )
    if source is not None:
        return source.answer(EscalationRequestedV2, payload, producer)
    return EscalationRequestedV2(
        ticket_id=row["ticket_id"], tenant_id=row["tenant_id"], producer=producer, payload=payload
    )


def outcome(row: Row) -> Event:
    """The event stored with a decided row (its outbox entry), as a model again."""
    stored = row["outcome_event"]
    return REGISTRY[(stored["type"], stored["version"])].model_validate(stored)


def view(row: Row) -> dict[str, Any]:
    """An approval as the API shows it: the exact change, why it waits, and who decided it."""
    proposal = row["proposal"]
    source = row.get("decision_event") or {}
    return {
        "id": row["id"],
        "status": row["status"],
        "ticket_id": row["ticket_id"],
        "tenant_id": row["tenant_id"],
        "action_id": row["action_id"],
        "workflow": proposal["workflow"],
        "tool": proposal["tool"],
        "agent": proposal["agent"],
        "args": proposal["args"],
        "idempotency_key": proposal["idempotency_key"],
        "rationale": proposal.get("rationale", ""),
        "preview": row["preview"],
        "reason": row["reason"],
        "rule_ids": (source.get("payload") or {}).get("rule_ids", []),
        "policy_version": source.get("policy_version"),
        "required_role": row["required_role"],
        "created_at": _iso(row["created_at"]),
        "expires_at": _iso(row["expires_at"]),
        "approver": row.get("approver"),
        "decided_reason": row.get("decided_reason"),
        "decided_at": _iso(row["decided_at"]) if row.get("decided_at") else None,
        "published": bool(row.get("published")) if row["status"] != "pending" else None,
    }


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds")
