"""Published models of superseded event versions, kept unchanged so their schemas and pins hold;
`registry.UPCASTERS` lifts each to the current version at the edge."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from .envelope import Event, Model

# Names match the current payload models on purpose: a schema's $defs keys are class names, and
# these must reproduce the published v1 schemas byte for byte.


class TaskClassified(Model):
    intent: str
    workflow: str | None = Field(description="workflow that will handle the task; None = none fits")
    language: str
    eligible: bool
    risk_tier: Literal["low", "medium", "high"]
    reasons: list[str] = Field(description="ids of the intake rules that fired")
    customer_id: str
    order_id: str | None = None
    subject: str
    channel: str
    facts: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="workflow-specific facts intake found, e.g. user_id and group_id for it_access",
    )


class TaskClassifiedV1(Event):
    type: Literal["task.classified"] = "task.classified"
    version: Literal[1] = 1
    payload: TaskClassified


class EscalationRequest(Model):
    reason: Literal[
        "out_of_scope",
        "not_eligible",
        "policy_denied",
        "approval_rejected",
        "verification_failed",
        "tool_failed",
        "approval_expired",
        "action_refused",
        "shadow_mode",
    ]
    summary: str = Field(description="one paragraph a human can act on")
    details: dict[str, JsonValue] = Field(default_factory=dict)
    rule_ids: list[str] = Field(default_factory=list)


class EscalationRequestedV1(Event):
    type: Literal["escalation.requested"] = "escalation.requested"
    version: Literal[1] = 1
    payload: EscalationRequest


class TaskOutcome(Model):
    outcome: Literal["resolved", "escalated"]
    summary: str
    handoff_id: str | None = None
    actions: list[str] = Field(default_factory=list, description="action ids that took effect")


class TaskFinishedV1(Event):
    type: Literal["task.finished"] = "task.finished"
    version: Literal[1] = 1
    payload: TaskOutcome


def to_v2(old: dict) -> dict:
    """v1 → v2 of task.classified, escalation.requested and task.finished: v2 only adds optional
    fields (and escalation reasons), so a v1 payload is a valid v2 payload."""
    return {**old, "version": 2}
