"""Action lifecycle events: proposed → decided → executed → verified."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from .envelope import Event, Model


class Proposal(Model):
    action_id: str
    workflow: str
    agent: str = Field(description="principal the action runs as, e.g. agent:refunds")
    tool: str
    args: dict[str, JsonValue]
    idempotency_key: str = Field(description="derived from ticket + step: one effect per key")
    rationale: str = ""
    context: dict[str, JsonValue] = Field(
        default_factory=dict, description="facts the planner relies on, for policy and review"
    )


class ActionProposedV1(Event):
    type: Literal["action.proposed"] = "action.proposed"
    version: Literal[1] = 1
    payload: Proposal


Verdict = Literal["allow", "deny", "needs_approval"]


class Decision(Model):
    proposal: Proposal
    verdict: Verdict
    rule_ids: list[str]
    reason: str = Field(description="human reason citing the policy section")
    capability: str | None = Field(default=None, description="signed, single-use grant on allow")
    approval_id: str | None = None
    approver_role: str | None = Field(default=None, description="role that may approve (needs_approval)")
    rollout: str | None = Field(
        default=None, description="rollout mode in force; in 'shadow' nothing is executed"
    )


class ActionDecidedV1(Event):
    type: Literal["action.decided"] = "action.decided"
    version: Literal[1] = 1
    payload: Decision


class Execution(Model):
    action_id: str
    tool: str
    args: dict[str, JsonValue]
    idempotency_key: str
    status: Literal["succeeded", "failed", "refused"] = Field(
        description="refused: the executor would not act (capability invalid, expired or replayed)"
    )
    result: dict[str, JsonValue] = Field(default_factory=dict)
    error: str | None = None
    duplicate: bool = Field(default=False, description="stored result returned for a known key")
    duration_ms: float = 0.0


class ActionExecutedV1(Event):
    type: Literal["action.executed"] = "action.executed"
    version: Literal[1] = 1
    payload: Execution


class Verification(Model):
    action_id: str
    tool: str
    verified: bool
    check: str = Field(description="which post-condition was checked")
    evidence: dict[str, JsonValue] = Field(default_factory=dict)
    result: dict[str, JsonValue] = Field(default_factory=dict, description="the tool's result")


class ActionVerifiedV1(Event):
    type: Literal["action.verified"] = "action.verified"
    version: Literal[1] = 1
    payload: Verification
