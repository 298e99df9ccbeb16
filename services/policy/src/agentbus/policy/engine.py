"""Deterministic evaluation of one proposed action against a bundle: identity, allow/deny lists,
argument schema, then the bundle's Cedar rules, then rollout mode. Pure: facts come in as data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cedarpy
from agentbus.shared.events import ApprovalDecision, Decision, Proposal

from .bundles import Bundle


@dataclass(frozen=True)
class Fired:
    """A rule that matched (or a built-in check that decided), for decisions and `explain`."""

    rule_id: str
    verdict: str  # allow | needs_approval | deny
    section: str


@dataclass(frozen=True)
class Evaluation:
    verdict: str
    rule_ids: list[str]
    reason: str
    fired: list[Fired] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # Cedar evaluation errors (treated as no match)

    def decision(self, proposal: Proposal, bundle: Bundle) -> Decision:
        return Decision(
            proposal=proposal,
            verdict=self.verdict,  # type: ignore[arg-type]
            rule_ids=self.rule_ids,
            reason=self.reason,
            approver_role=bundle.approver_role if self.verdict == "needs_approval" else None,
            rollout=bundle.rollout,
        )


def _cite(bundle: Bundle, rule_id: str, fallback: str = "") -> str:
    return bundle.sections.get(rule_id) or fallback or rule_id


def _builtin(bundle: Bundle, verdict: str, rule_id: str, lead: str) -> Evaluation:
    section = _cite(bundle, rule_id)
    return Evaluation(verdict, [rule_id], f"{lead} under {section}", [Fired(rule_id, verdict, section)])


def cedar_value(value: Any) -> Any:
    """Cedar has no null and no floats: drop the one, and keep integers exact."""
    if isinstance(value, dict):
        return {k: cedar_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [cedar_value(v) for v in value if v is not None]
    if isinstance(value, float):
        return int(value) if value.is_integer() else str(value)
    return value


def request_context(
    proposal: Proposal, bundle: Bundle, ticket_id: str | None, tenant_id: str | None, facts: dict[str, Any]
) -> dict[str, Any]:
    return cedar_value(
        {
            "args": proposal.args,
            "facts": facts,
            "thresholds": bundle.thresholds_for_rollout(),
            "rollout": bundle.rollout,
            "workflow": bundle.workflow,
            "tenant": tenant_id or "",
            "ticket_id": ticket_id or "",
            "writes": proposal.tool in bundle.writes,
            "requester": requester(proposal),
        }
    )


def requester(proposal: Proposal) -> dict[str, str]:
    """Who asked, as intake established it and the planner's own code (never the model) put it in
    the proposal's context: the shop customer and the directory user; "" when not given."""
    return {
        name: value if isinstance(value := proposal.context.get(name), str) else ""
        for name in ("customer_id", "user_id")
    }


def evaluate(
    proposal: Proposal,
    bundle: Bundle,
    *,
    ticket_id: str | None,
    tenant_id: str | None,
    facts: dict[str, Any],
) -> Evaluation:
    if proposal.agent != bundle.agent:
        return _builtin(
            bundle, "deny", "agent.mismatch", f"{proposal.agent} may not act for {bundle.workflow}"
        )
    if proposal.tool in bundle.denied_tools:
        return _builtin(bundle, "deny", "tool.denied", f"{proposal.tool} is denied")
    if proposal.tool not in bundle.allowed_tools:
        return _builtin(bundle, "deny", "tool.not_allowed", f"{proposal.tool} is not allowed")
    errors = sorted(bundle.validators[proposal.tool].iter_errors(proposal.args), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(arguments)"
        return _builtin(bundle, "deny", "args.invalid", f"Arguments rejected ({where}: {errors[0].message})")

    entities: list[dict[str, Any]] = [
        {
            "uid": {"type": "Agent", "id": bundle.agent},
            "attrs": {},
            "parents": [{"type": "Role", "id": r} for r in bundle.roles],
        },
        *({"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []} for r in bundle.roles),
    ]
    request = {
        "principal": {"type": "Agent", "id": proposal.agent},
        "action": {"type": "Action", "id": proposal.tool},
        "resource": {"type": "Tenant", "id": tenant_id or ""},
        "context": request_context(proposal, bundle, ticket_id, tenant_id, facts),
    }
    result = cedarpy.is_authorized(request, bundle.cedar, entities)
    matched = [bundle.rules[p] for p in result.diagnostics.reasons if p in bundle.rules]
    fired = [Fired(r.rule_id, r.verdict, _cite(bundle, r.rule_id, r.section)) for r in matched]
    errors = list(result.diagnostics.errors)
    forbids = [f for f in fired if f.verdict == "deny"]
    permits = [f for f in fired if f.verdict != "deny"]
    if forbids or result.decision != cedarpy.Decision.Allow:
        if not forbids:
            none = _builtin(bundle, "deny", "rules.no_permit", f"No rule permits {proposal.tool} here")
            return Evaluation(none.verdict, none.rule_ids, none.reason, none.fired, errors)
        lead = f"{proposal.tool} forbidden"
        return Evaluation(
            "deny", [f.rule_id for f in forbids], f"{lead} under {forbids[0].section}", fired, errors
        )

    approval = [f for f in permits if f.verdict == "needs_approval"]
    deciding = approval or permits  # any rule asking for approval wins over plain allows
    verdict = "needs_approval" if approval else "allow"
    rule_ids = [f.rule_id for f in deciding]
    lead = (
        f"{proposal.tool} needs approval by {bundle.approver_role}"
        if approval
        else f"{proposal.tool} allowed"
    )
    reason = f"{lead} under {deciding[0].section}"
    if verdict == "allow" and bundle.rollout == "approval" and proposal.tool in bundle.writes:
        section = _cite(bundle, "rollout.approval")
        verdict, rule_ids = "needs_approval", [*rule_ids, "rollout.approval"]
        reason = f"{reason}; every write needs approval by {bundle.approver_role} under {section}"
        fired = [*fired, Fired("rollout.approval", "needs_approval", section)]
    if bundle.rollout == "shadow":
        section = _cite(bundle, "rollout.shadow")
        rule_ids = [*rule_ids, "rollout.shadow"]
        reason = f"{reason}; shadow mode: recorded, not executed, under {section}"
        fired = [*fired, Fired("rollout.shadow", verdict, section)]
    return Evaluation(verdict, rule_ids, reason, fired, errors)


def resolve_approval(
    approval: ApprovalDecision, pending: Proposal | None, current: Evaluation, bundle: Bundle
) -> Evaluation:
    """A human's approval decision, applied to the action it names.

    It releases only the exact proposal this decider sent for approval, and only while the bundle
    in force still says that proposal needs approval: no approval widens what policy allows."""
    if pending is None or pending != approval.proposal:
        return _builtin(bundle, "deny", "approval.unmatched", "No pending approval matches this action")
    if current.verdict != "needs_approval":
        return current  # policy changed since: its verdict stands, approval or not
    if approval.approved and approval.role == bundle.approver_role:
        return _builtin(bundle, "allow", "approval.granted", f"Approved by {approval.approver}")
    if approval.approved:
        lead = f"{approval.approver} lacks role {bundle.approver_role}"
        return _builtin(bundle, "deny", "approval.rejected", lead)
    why = f": {approval.reason}" if approval.reason else ""
    return _builtin(bundle, "deny", "approval.rejected", f"Rejected by {approval.approver}{why}")


def quota_denial(bundle: Bundle, rule_id: str, lead: str) -> Evaluation:
    """A limit, rate or budget that ran out: a typed deny the planner hands to a human."""
    return _builtin(bundle, "deny", rule_id, lead)
