"""First-version refund policy: deterministic decisions from a bundle (no model can widen them)."""

from __future__ import annotations

import hashlib
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentbus.shared.events import ApprovalDecision, Decision, Proposal

log = logging.getLogger("agentbus.policy")

# Every rule id `decide` can return; a bundle must cite a section for each.
RULE_IDS = frozenset(
    {
        "agent.mismatch",
        "tool.not_allowed",
        "tool.allowed",
        "refund.invalid_amount",
        "refund.autonomous",
        "refund.needs_approval",
        "refund.above_approval_limit",
        "approval.granted",
        "approval.rejected",
        "approval.unmatched",
    }
)


class BundleError(ValueError):
    """A bundle that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Bundle:
    workflow: str
    agent: str
    allowed_tools: frozenset[str]
    autonomous_max_cents: int
    approval_max_cents: int
    approver_role: str
    currency: str
    sections: dict[str, str]
    version: str

    @classmethod
    def parse(cls, raw: bytes) -> Bundle:
        try:
            data: dict[str, Any] = tomllib.loads(raw.decode())
            refunds = data["refunds"]
            bundle = cls(
                workflow=data["bundle"]["workflow"],
                agent=data["bundle"]["agent"],
                allowed_tools=frozenset(data["tools"]["allowed"]),
                autonomous_max_cents=int(refunds["autonomous_max_cents"]),
                approval_max_cents=int(refunds["approval_max_cents"]),
                approver_role=refunds["approver_role"],
                currency=refunds.get("currency", "USD"),
                sections=dict(data["sections"]),
                version="sha256:" + hashlib.sha256(raw).hexdigest()[:16],
            )
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"not valid TOML: {exc}") from exc
        except KeyError as exc:
            raise BundleError(f"missing key {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise BundleError(f"bad value: {exc}") from exc
        missing = sorted(RULE_IDS - bundle.sections.keys())
        if missing:
            raise BundleError(f"[sections] has no text for rule ids: {', '.join(missing)}")
        if not 0 < bundle.autonomous_max_cents <= bundle.approval_max_cents:
            raise BundleError("need 0 < autonomous_max_cents <= approval_max_cents")
        return bundle


class BundleFile:
    """Re-reads the bundle when the file changes, so a new version applies without a restart.

    A broken edit keeps the last good version in force (and logs why) instead of failing every
    decision; only a bundle that never loaded is an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._bundle: Bundle | None = None

    def current(self) -> Bundle:
        mtime = self.path.stat().st_mtime
        if self._bundle is None or mtime != self._mtime:
            self._mtime = mtime
            try:
                self._bundle = Bundle.parse(self.path.read_bytes())
            except BundleError as exc:
                if self._bundle is None:
                    raise BundleError(f"{self.path}: {exc}") from exc
                log.error("%s: %s; keeping version %s", self.path, exc, self._bundle.version)
        return self._bundle


def _decision(bundle: Bundle, proposal: Proposal, verdict: str, rule: str, lead: str) -> Decision:
    return Decision(
        proposal=proposal,
        verdict=verdict,  # type: ignore[arg-type]
        rule_ids=[rule],
        reason=f"{lead} under {bundle.sections[rule]}",
    )


def decide(proposal: Proposal, bundle: Bundle) -> Decision:
    if proposal.agent != bundle.agent:
        return _decision(bundle, proposal, "deny", "agent.mismatch", f"{proposal.agent} refused")
    if proposal.tool not in bundle.allowed_tools:
        return _decision(bundle, proposal, "deny", "tool.not_allowed", f"{proposal.tool} refused")
    if proposal.tool != "payments.issue_refund":
        return _decision(bundle, proposal, "allow", "tool.allowed", f"{proposal.tool} allowed")
    amount = proposal.args.get("amount_cents")
    wrong_currency = proposal.args.get("currency") != bundle.currency
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0 or wrong_currency:
        return _decision(bundle, proposal, "deny", "refund.invalid_amount", "Invalid refund amount")
    shown = f"${amount / 100:.2f}"
    if amount <= bundle.autonomous_max_cents:
        return _decision(bundle, proposal, "allow", "refund.autonomous", f"Eligible for a {shown} refund")
    if amount <= bundle.approval_max_cents:
        needs = _decision(
            bundle,
            proposal,
            "needs_approval",
            "refund.needs_approval",
            f"A {shown} refund needs approval by {bundle.approver_role}",
        )
        return needs.model_copy(update={"approver_role": bundle.approver_role})
    return _decision(
        bundle,
        proposal,
        "deny",
        "refund.above_approval_limit",
        f"A {shown} refund is above every automatic limit",
    )


def decide_approval(approval: ApprovalDecision, bundle: Bundle, pending: Proposal | None) -> Decision:
    """Turn a human's approval decision into the action's final verdict.

    `pending` is the proposal this decider itself sent for approval. An approval can only release
    exactly that proposal, and only while policy still says it needs approval: a human can never
    widen what the bundle allows (other tool, agent or amount, or a changed bundle)."""
    proposal = approval.proposal
    if pending is None or pending != proposal:
        decision = _decision(
            bundle, proposal, "deny", "approval.unmatched", "No pending approval matches this action"
        )
    elif (current := decide(proposal, bundle)).verdict != "needs_approval":
        decision = current  # policy changed since: its verdict stands, approval or not
    elif approval.approved and approval.role == bundle.approver_role:
        decision = _decision(
            bundle, proposal, "allow", "approval.granted", f"Approved by {approval.approver}"
        )
    elif approval.approved:
        decision = _decision(
            bundle,
            proposal,
            "deny",
            "approval.rejected",
            f"{approval.approver} lacks role {bundle.approver_role}",
        )
    else:
        decision = _decision(
            bundle, proposal, "deny", "approval.rejected", f"Rejected by {approval.approver}"
        )
    return decision.model_copy(update={"approval_id": approval.approval_id})
