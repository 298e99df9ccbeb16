"""The planner interface (`Planner`), the task state it works on, and the pieces every workflow's
state machine shares: deterministic ids, one proposal at a time, deny → escalation.

Pure functions and small classes; no transport, no database. The planner proposes; policy decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from agentbus.shared.events import (
    Decision,
    EscalationRequest,
    Proposal,
    TaskClassified,
    TaskOutcome,
    Usage,
    Verification,
)


@dataclass(frozen=True)
class TaskState:
    ticket_id: str
    tenant_id: str
    workflow: str
    state: str  # running | escalated | resolved
    step: int
    pending_action_id: str | None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    """What one input did: the new state and what to publish (at most one of each kind)."""

    state: TaskState
    proposal: Proposal | None = None
    escalation: EscalationRequest | None = None
    finished: TaskOutcome | None = None


class Planner(Protocol):
    """Turns a classified task, then each verified or denied action, into the next transition.

    The one interface of both planners: `WorkflowPlanner` (deterministic state machines, the
    offline default) and `ModelPlanner` (a model picks each tool call). Every method returns None
    when the input is not for it: a task of another workflow, or an outcome of an action the task
    is not waiting for (stale, or after the task ended)."""

    async def start(self, ticket_id: str, tenant_id: str, task: TaskClassified) -> Transition | None: ...

    async def on_verified(self, state: TaskState, verification: Verification) -> Transition | None: ...

    async def on_denied(self, state: TaskState, decision: Decision) -> Transition | None: ...


class Workflow(Protocol):
    """One workflow's deterministic state machine: pure and synchronous."""

    @property
    def name(self) -> str: ...

    def start(self, ticket_id: str, tenant_id: str, task: TaskClassified) -> Transition | None: ...

    def on_verified(self, state: TaskState, verification: Verification) -> Transition | None: ...

    def on_denied(self, state: TaskState, decision: Decision) -> Transition | None: ...


def new_task(ticket_id: str, tenant_id: str, workflow: str, context: dict[str, Any]) -> TaskState:
    return TaskState(
        ticket_id=ticket_id,
        tenant_id=tenant_id,
        workflow=workflow,
        state="running",
        step=0,
        pending_action_id=None,
        context=context,
    )


def propose(
    state: TaskState,
    *,
    agent: str,
    tool: str,
    args: dict[str, Any],
    rationale: str,
    context: dict[str, Any],
) -> Transition:
    """Propose the current step's action. Its ids depend only on ticket, step and tool, so a replay
    proposes the same action: id `act-<ticket>-<step>`, key `<tenant>:<ticket>:<step>:<tool>`."""
    action_id = f"act-{state.ticket_id}-{state.step}"
    proposal = Proposal(
        action_id=action_id,
        workflow=state.workflow,
        agent=agent,
        tool=tool,
        args=args,
        idempotency_key=f"{state.tenant_id}:{state.ticket_id}:{state.step}:{tool}",
        rationale=rationale,
        context=context,
    )
    return Transition(state=replace(state, pending_action_id=action_id), proposal=proposal)


def awaits(state: TaskState, action_id: str) -> bool:
    """Whether the task is running and waiting for exactly this action."""
    return state.state == "running" and action_id == state.pending_action_id


def stopped_by_verifier(state: TaskState) -> Transition:
    """A failed verification ends the task; the verifier has already asked for a human."""
    return Transition(state=replace(state, state="escalated", pending_action_id=None))


def not_eligible(
    state: TaskState, context: dict[str, Any], summary: str, details: dict[str, Any], rule_id: str
) -> Transition:
    return Transition(
        state=replace(state, state="escalated", pending_action_id=None, context=context),
        escalation=EscalationRequest(
            reason="not_eligible", summary=summary, details=details, rule_ids=[rule_id]
        ),
    )


def resolved(
    state: TaskState, context: dict[str, Any], summary: str, done: list[str], usage: Usage | None = None
) -> Transition:
    return Transition(
        state=replace(state, state="resolved", pending_action_id=None, context=context),
        finished=TaskOutcome(outcome="resolved", summary=summary, actions=done, usage=usage or Usage()),
    )


def denied(
    state: TaskState, decision: Decision, what: str, details: dict[str, Any], usage: Usage | None = None
) -> Transition:
    """Hand a task whose pending action policy denied (or a human rejected) to a human, with a
    summary naming `what` was refused, the rule and policy's reason. Callers check `awaits` first."""
    rules = ", ".join(decision.rule_ids)
    reason = "approval_rejected" if "approval.rejected" in decision.rule_ids else "policy_denied"
    return Transition(
        state=replace(state, state="escalated", pending_action_id=None),
        escalation=EscalationRequest(
            reason=reason,
            summary=(
                f"Ticket {state.ticket_id}: the {what} was not authorised (rule {rules}: "
                f"{decision.reason}). A human should review and decide."
            ),
            details={**details, "proposed_action": decision.proposal.model_dump(mode="json")},
            rule_ids=decision.rule_ids,
            usage=usage or Usage(),
        ),
    )


def shadowed(state: TaskState, decision: Decision) -> Transition | None:
    """Shadow rollout: policy recorded what would run and nothing executes, so the task goes to a
    human with the action the agent would have taken. None when not waiting for this action."""
    proposal = decision.proposal
    if not awaits(state, proposal.action_id):
        return None
    return Transition(
        state=replace(state, state="escalated", pending_action_id=None),
        escalation=EscalationRequest(
            reason="shadow_mode",
            summary=(
                f"Ticket {state.ticket_id}: shadow mode — the agent would have run {proposal.tool} "
                f"{proposal.args} ({decision.verdict}: {decision.reason}). Nothing was executed; "
                "a human should handle the ticket."
            ),
            details={"would_run": proposal.model_dump(mode="json"), "verdict": decision.verdict},
            rule_ids=decision.rule_ids,
        ),
    )
