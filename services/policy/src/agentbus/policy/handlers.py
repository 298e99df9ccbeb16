"""Policy handlers: actions.proposed and approvals.decided → actions.decided (with a capability on
allow); actions.executed → budget settlement."""

from __future__ import annotations

from collections.abc import Sequence

from agentbus.shared.answers import answer
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import Signer
from agentbus.shared.events import (
    ActionDecidedV1,
    ActionExecutedV1,
    ActionProposedV1,
    ApprovalDecidedV1,
    Decision,
    Event,
    Proposal,
)

from . import engine
from .bundles import Bundle, BundleSet
from .engine import Evaluation
from .facts import FactSource
from .store import AlreadyDecided, PgPolicyStore

UNKNOWN_WORKFLOW = "workflow.unknown"
LIMIT_RULES = {
    "tool_calls": "limit.tool_calls",
    "model_calls": "limit.model_calls",
    "tokens": "limit.tokens",
    "spend_microdollars": "limit.spend",
}


def usage_of(proposal: Proposal) -> dict[str, int]:
    """Model usage the planner reports for the step that produced this proposal."""
    usage = proposal.context.get("usage")
    if not isinstance(usage, dict):
        return {}
    return {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}


class PolicyHandlers:
    def __init__(
        self,
        bus: Bus,
        bundles: BundleSet,
        store: PgPolicyStore | None = None,
        facts: FactSource | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.bus = bus
        self.bundles = bundles
        self.store = store
        self.facts = facts
        self.signer = signer

    @property
    def _store(self) -> PgPolicyStore:
        assert self.store is not None and self.facts is not None, "policy decider not started"
        return self.store

    async def on_action_proposed(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionProposedV1)
        proposal = event.payload
        if (stored := await self._store.get(proposal.action_id)) is not None:
            return [ActionDecidedV1.model_validate(stored)]
        bundle = self.bundles.get(proposal.workflow)
        if bundle is None:
            return [await self._unknown_workflow(event, proposal)]
        evaluation = await self._evaluate(event, proposal, bundle)
        return [await self._decide(event, proposal.action_id, proposal, bundle, evaluation, count=True)]

    async def on_approval_decided(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ApprovalDecidedV1)
        approval = event.payload
        # Keyed per approval, not per action: one forged or mistaken approval event must not fix
        # the outcome for every later one. Two allows for one action still act once (effect ledger).
        key = f"{approval.proposal.action_id}:approval:{approval.approval_id}"
        if (stored := await self._store.get(key)) is not None:
            return [ActionDecidedV1.model_validate(stored)]
        bundle = self.bundles.get(approval.proposal.workflow)
        if bundle is None:
            return [await self._unknown_workflow(event, approval.proposal)]
        sent = await self._store.get(approval.proposal.action_id)
        pending = None
        if sent is not None and sent["payload"]["verdict"] == "needs_approval":
            pending = ActionDecidedV1.model_validate(sent).payload.proposal
        current = await self._evaluate(event, approval.proposal, bundle)
        evaluation = engine.resolve_approval(approval, pending, current, bundle)
        decided = await self._decide(
            event, key, approval.proposal, bundle, evaluation, count=False, approval_id=approval.approval_id
        )
        return [decided]

    async def on_action_executed(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionExecutedV1)
        await self._store.settle(event.payload.action_id, event.payload.status == "succeeded")
        return []

    async def _evaluate(self, event: Event, proposal: Proposal, bundle: Bundle) -> Evaluation:
        assert self.facts is not None
        facts = await self.facts.facts(proposal)
        return engine.evaluate(
            proposal, bundle, ticket_id=event.ticket_id, tenant_id=event.tenant_id, facts=facts
        )

    async def _decide(
        self,
        cause: Event,
        key: str,
        proposal: Proposal,
        bundle: Bundle,
        evaluation: Evaluation,
        *,
        count: bool,
        approval_id: str | None = None,
    ) -> ActionDecidedV1:
        """Apply limits, rate and budget, sign an allow, and store the decision: one transaction."""
        tenant = cause.tenant_id or ""
        try:
            async with self._store.transaction() as tx:
                if count and cause.ticket_id:
                    over = await tx.count_task(cause.ticket_id, usage_of(proposal), bundle)
                    if over:
                        evaluation = engine.quota_denial(
                            bundle, LIMIT_RULES[over], f"Task limit {over} reached"
                        )
                per_minute = bundle.rate_limits.get(proposal.tool)
                # The rate limits calls: only an allow spends a token. A needs_approval spends its
                # token when the approval turns it into an allow, not twice (which halved the rate
                # for approved actions and escalated approved refunds in a busy minute).
                if (
                    evaluation.verdict == "allow"
                    and per_minute
                    and not await tx.take_rate(tenant, proposal.tool, per_minute)
                ):
                    evaluation = engine.quota_denial(
                        bundle, "rate.exceeded", f"Rate limit for {proposal.tool} reached"
                    )
                shadow = bundle.rollout == "shadow"
                if evaluation.verdict == "allow" and not shadow:
                    for budget in bundle.budgets:
                        amount = proposal.args.get(budget.amount_arg)
                        if budget.tool != proposal.tool or not isinstance(amount, int):
                            continue
                        if not await tx.reserve(
                            proposal.action_id, tenant, budget.name, amount, budget.per_day
                        ):
                            evaluation = engine.quota_denial(
                                bundle,
                                "budget.exhausted",
                                f"Today's {budget.name} budget for {tenant} is spent",
                            )
                            break
                decision = evaluation.decision(proposal, bundle).model_copy(
                    update={"approval_id": approval_id}
                )
                if decision.verdict == "allow" and not shadow:
                    # Only an allow carries authority, and only through this signature.
                    assert self.signer is not None, "policy decider has no signing key"
                    decision = decision.model_copy(
                        update={"capability": self.signer.issue(proposal, cause.tenant_id)}
                    )
                fresh = cause.answer(
                    ActionDecidedV1, decision, self.bus.producer, policy_version=bundle.version
                )
                await tx.put(key, cause.ticket_id, fresh.model_dump(mode="json"))
        except AlreadyDecided:
            stored = await self._store.get(key)
            assert stored is not None
            return ActionDecidedV1.model_validate(stored)
        return fresh

    async def _unknown_workflow(self, cause: Event, proposal: Proposal) -> ActionDecidedV1:
        decision = Decision(
            proposal=proposal,
            verdict="deny",
            rule_ids=[UNKNOWN_WORKFLOW],
            reason=f"No policy bundle governs workflow {proposal.workflow!r}: nothing runs without one",
        )
        fresh = answer(cause, ActionDecidedV1, decision, self.bus.producer, policy_version="none")
        return fresh
