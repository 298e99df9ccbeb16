"""Ends of a ticket: escalation requests, approval decisions and finished tasks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from .actions import Proposal
from .envelope import Event, Model
from .usage import Usage

EscalationReason = Literal[
    "out_of_scope",
    "not_eligible",
    "policy_denied",
    "approval_rejected",
    "verification_failed",
    "tool_failed",
    "approval_expired",
    "action_refused",
    "shadow_mode",
    "model_failed",
]


class EscalationRequest(Model):
    """Version 2 adds the reason model_failed and the task's model usage so far."""

    reason: EscalationReason
    summary: str = Field(description="one paragraph a human can act on")
    details: dict[str, JsonValue] = Field(default_factory=dict)
    rule_ids: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage, description="model usage of the task up to here")


class EscalationRequestedV2(Event):
    type: Literal["escalation.requested"] = "escalation.requested"
    version: Literal[2] = 2
    payload: EscalationRequest


class ApprovalDecision(Model):
    approval_id: str
    proposal: Proposal
    approved: bool
    approver: str = Field(description="identity that decided, e.g. user:alice")
    role: str
    reason: str = ""


class ApprovalDecidedV1(Event):
    type: Literal["approval.decided"] = "approval.decided"
    version: Literal[1] = 1
    payload: ApprovalDecision


Outcome = Literal["resolved", "escalated"]


class TaskOutcome(Model):
    """Version 2 adds the task's total model usage: cost per ticket."""

    outcome: Outcome
    summary: str
    handoff_id: str | None = None
    actions: list[str] = Field(default_factory=list, description="action ids that took effect")
    usage: Usage = Field(default_factory=Usage, description="model usage of the whole task")


class TaskFinishedV2(Event):
    type: Literal["task.finished"] = "task.finished"
    version: Literal[2] = 2
    payload: TaskOutcome
