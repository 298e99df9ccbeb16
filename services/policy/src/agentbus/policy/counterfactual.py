"""Counterfactual replay: recorded decisions re-decided under other bundles, with facts, task limits,
rate windows and budgets rebuilt from the log in event order. Pure: no broker, no database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal

from agentbus.shared.events import (
    ActionDecidedV1,
    ActionExecutedV1,
    ApprovalDecidedV1,
    ApprovalDecision,
    Event,
    Execution,
    Proposal,
)

from . import engine
from .bundles import Bundle
from .engine import Evaluation
from .handlers import LIMIT_RULES, UNKNOWN_WORKFLOW, usage_of
from .log_facts import LogFacts
from .store import TASK_LIMITS

# Besides the engine's verdicts: the log cannot decide it; the approval would never have been asked
# for (its action no longer needs one); or no counterfactual bundle covers the workflow.
UNDETERMINED, NOT_ASKED, SKIPPED = "undetermined", "not_asked", "skipped"
VERDICTS = ("allow", "needs_approval", "deny")

NOTES = (
    "Facts come from the log only: an order from the latest orders.get_order result plus the refunds "
    "executed after it, a user or group from directory.get_user; nothing is read from the systems of "
    "record.",
    "Task limits, rate limits and budgets are replayed over the log in event order, each ticket from "
    "its first decision and each tenant's budget from the start of the (UTC) day.",
    "The proposals are the recorded ones: after a decision of a ticket flips, its later proposals "
    "(after_flip) might not have been made at all.",
)


@dataclass(frozen=True)
class Replayed:
    """One recorded decision and what the counterfactual bundle decides instead."""

    event_id: str
    ticket_id: str | None
    tenant_id: str | None
    occurred_at: datetime
    kind: Literal["proposal", "approval"]
    action_id: str
    approval_id: str | None
    workflow: str
    tool: str
    amount_cents: int | None
    currency: str | None
    recorded: str
    recorded_shadow: bool
    recorded_rule_ids: list[str]
    recorded_version: str | None
    verdict: str
    shadow: bool
    rule_ids: list[str]
    reason: str
    version: str | None
    missing: list[str] = field(default_factory=list)
    after_flip: bool = False

    @property
    def flipped(self) -> bool:
        """A real decision that differs from the recorded one (shadow mode counts: it executes nothing)."""
        return self.verdict in VERDICTS and (self.verdict, self.shadow) != (
            self.recorded,
            self.recorded_shadow,
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "occurred_at": self.occurred_at.isoformat(), "flipped": self.flipped}


def autonomous(verdict: str, shadow: bool) -> bool:
    return verdict == "allow" and not shadow


def _label(verdict: str, shadow: bool) -> str:
    return f"{verdict}+shadow" if shadow else verdict


class Quotas:
    """policy.store's counters (task usage, rate windows, budgets) over the replayed decisions."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(TASK_LIMITS, 0))
        self.rates: dict[tuple[str, str, datetime], int] = defaultdict(int)
        self.used: dict[tuple[str, date, str], int] = defaultdict(int)
        self.reserved: dict[str, tuple[tuple[str, date, str], int, str]] = {}

    def count_task(self, ticket_id: str, usage: dict[str, int], bundle: Bundle) -> str | None:
        row = self.tasks[ticket_id]
        for name in TASK_LIMITS:
            row[name] += 1 if name == "tool_calls" else usage.get(name, 0)
        return next(
            (n for n in TASK_LIMITS if (lim := bundle.limits.get(n)) is not None and row[n] > lim), None
        )

    def take_rate(self, tenant: str, tool: str, at: datetime, per_minute: int) -> bool:
        window = (tenant, tool, at.astimezone(UTC).replace(second=0, microsecond=0))
        if self.rates[window] >= per_minute:
            return False
        self.rates[window] += 1
        return True

    def reserve(
        self, action_id: str, tenant: str, budget: str, amount: int, per_day: int, at: datetime
    ) -> bool:
        held = self.reserved.get(action_id)
        if held is not None and held[2] != "released":
            return True
        key = (tenant, at.astimezone(UTC).date(), budget)
        if self.used[key] + amount > per_day:
            return False
        self.used[key] += amount
        self.reserved[action_id] = (key, amount, "reserved")
        return True

    def settle(self, execution: Execution) -> None:
        held = self.reserved.get(execution.action_id)
        if held is None or held[2] != "reserved":
            return
        key, amount, _ = held
        succeeded = execution.status == "succeeded"
        self.reserved[execution.action_id] = (key, amount, "settled" if succeeded else "released")
        if not succeeded:
            self.used[key] -= amount


@dataclass(frozen=True)
class _Outcome:
    verdict: str
    shadow: bool
    rule_ids: list[str]
    reason: str
    version: str | None
    missing: list[str] = field(default_factory=list)


def _of(evaluation: Evaluation, bundle: Bundle) -> _Outcome:
    shadow = "rollout.shadow" in evaluation.rule_ids
    return _Outcome(evaluation.verdict, shadow, evaluation.rule_ids, evaluation.reason, bundle.version)


class Replay:
    """Feeds recorded events in log order to the counterfactual decider; `rows` holds the result."""

    def __init__(self, bundles: Mapping[str, Bundle], *, skip_unknown: bool) -> None:
        self.bundles = bundles
        self.skip_unknown = skip_unknown  # else, like the live decider, deny a workflow with no bundle
        self.quotas = Quotas()
        self.rows: list[Replayed] = []
        self.originals: dict[str, tuple[_Outcome, Proposal]] = {}
        self.recorded: dict[str, str] = {}
        self.flipped_tickets: set[str] = set()
        self.seen: set[tuple[str, str | None]] = set()
        self.facts = LogFacts({})

    def run(self, events: Iterable[Event]) -> list[Replayed]:
        events = list(events)
        executions: dict[str, Execution] = {}
        for e in events:  # the first execution of an action is the one that followed its decision
            if isinstance(e, ActionExecutedV1):
                executions.setdefault(e.payload.action_id, e.payload)
        approvals = {e.event_id: e.payload for e in events if isinstance(e, ApprovalDecidedV1)}
        self.facts = LogFacts(executions)
        for event in events:
            if isinstance(event, ActionExecutedV1):
                self.facts.observe(event.payload)
                self.quotas.settle(event.payload)
            elif isinstance(event, ActionDecidedV1):
                key = (event.payload.proposal.action_id, event.payload.approval_id)
                if key not in self.seen:  # a redelivered decision is the same decision
                    self.seen.add(key)
                    self._replay(event, approvals)
        return self.rows

    def _replay(self, event: ActionDecidedV1, approvals: Mapping[str, ApprovalDecision]) -> None:
        decision = event.payload
        proposal = decision.proposal
        bundle = self.bundles.get(proposal.workflow)
        if decision.approval_id is None:
            self.recorded[proposal.action_id] = decision.verdict
            outcome = self._original(event, proposal, bundle)
            self.originals[proposal.action_id] = (outcome, proposal)
        else:
            outcome = self._approval(event, approvals.get(event.causation_id or ""), bundle)
        amount, currency = _money(proposal, bundle)
        recorded_shadow = "rollout.shadow" in decision.rule_ids
        row = Replayed(
            event_id=event.event_id,
            ticket_id=event.ticket_id,
            tenant_id=event.tenant_id,
            occurred_at=event.occurred_at,
            kind="proposal" if decision.approval_id is None else "approval",
            action_id=proposal.action_id,
            approval_id=decision.approval_id,
            workflow=proposal.workflow,
            tool=proposal.tool,
            amount_cents=amount,
            currency=currency,
            recorded=decision.verdict,
            recorded_shadow=recorded_shadow,
            recorded_rule_ids=list(decision.rule_ids),
            recorded_version=event.policy_version,
            verdict=outcome.verdict,
            shadow=outcome.shadow,
            rule_ids=outcome.rule_ids,
            reason=outcome.reason,
            version=outcome.version,
            missing=outcome.missing,
            after_flip=(event.ticket_id or "") in self.flipped_tickets,
        )
        if row.flipped and event.ticket_id:
            self.flipped_tickets.add(event.ticket_id)
        self.rows.append(row)

    def _original(self, event: ActionDecidedV1, proposal: Proposal, bundle: Bundle | None) -> _Outcome:
        if bundle is None:
            if self.skip_unknown:
                return _Outcome(SKIPPED, False, [], "no counterfactual bundle for this workflow", None)
            why = f"No policy bundle governs workflow {proposal.workflow!r}: nothing runs without one"
            return _Outcome("deny", False, [UNKNOWN_WORKFLOW], why, "none")
        evaluation, missing = self._evaluate(event, proposal, bundle)
        if event.ticket_id:  # the live decider counts every proposal, whatever it decides
            over = self.quotas.count_task(event.ticket_id, usage_of(proposal), bundle)
            if over:
                return _of(
                    engine.quota_denial(bundle, LIMIT_RULES[over], f"Task limit {over} reached"), bundle
                )
        if missing:
            return _undetermined(evaluation, bundle, missing)
        return _of(self._spend(event, proposal, bundle, evaluation), bundle)

    def _approval(
        self, event: ActionDecidedV1, approval: ApprovalDecision | None, bundle: Bundle | None
    ) -> _Outcome:
        proposal = event.payload.proposal
        if bundle is None:
            return self._original(event, proposal, None)
        original = self.originals.get(proposal.action_id)
        if approval is None or original is None:
            lost = "the approval.decided event" if approval is None else "the decision it answers"
            return _Outcome(UNDETERMINED, False, [], f"{lost} is not in the log", bundle.version, [lost])
        first, pending = original
        if first.verdict == UNDETERMINED:
            return _Outcome(
                UNDETERMINED, False, [], "the decision it answers is undetermined", bundle.version
            )
        if self.recorded.get(proposal.action_id) == "needs_approval" and first.verdict != "needs_approval":
            why = f"no approval would have been asked for: the action is now {first.verdict}"
            return _Outcome(NOT_ASKED, False, [], why, bundle.version)
        current, missing = self._evaluate(event, proposal, bundle)
        if missing:
            return _undetermined(current, bundle, missing)
        held = pending if first.verdict == "needs_approval" else None
        evaluation = engine.resolve_approval(approval, held, current, bundle)
        return _of(self._spend(event, proposal, bundle, evaluation), bundle)

    def _evaluate(self, event: Event, proposal: Proposal, bundle: Bundle) -> tuple[Evaluation, list[str]]:
        """The engine's evaluation, and the facts a rule needed that the log lacks. Cedar reports a
        missing attribute as an evaluation error (and skips that rule), so a fact the log lacks
        matters only when an error names it; other errors the live decider met as well."""
        facts, missing = self.facts.facts(proposal)
        evaluation = engine.evaluate(
            proposal, bundle, ticket_id=event.ticket_id, tenant_id=event.tenant_id, facts=facts
        )
        needed = [what for attr, what in missing if any(f"`{attr}`" in e for e in evaluation.errors)]
        return evaluation, needed

    def _spend(self, event: Event, proposal: Proposal, bundle: Bundle, evaluation: Evaluation) -> Evaluation:
        """Rate limit and budget, as PolicyHandlers._decide applies them after the rules."""
        tenant, at = event.tenant_id or "", event.occurred_at
        per_minute = bundle.rate_limits.get(proposal.tool)
        if (
            evaluation.verdict == "allow"
            and per_minute
            and not self.quotas.take_rate(tenant, proposal.tool, at, per_minute)
        ):
            return engine.quota_denial(bundle, "rate.exceeded", f"Rate limit for {proposal.tool} reached")
        if evaluation.verdict != "allow" or bundle.rollout == "shadow":
            return evaluation
        for budget in bundle.budgets:
            amount = proposal.args.get(budget.amount_arg)
            if budget.tool != proposal.tool or not isinstance(amount, int):
                continue
            if not self.quotas.reserve(proposal.action_id, tenant, budget.name, amount, budget.per_day, at):
                lead = f"Today's {budget.name} budget for {tenant} is spent"
                return engine.quota_denial(bundle, "budget.exhausted", lead)
        return evaluation


def _undetermined(evaluation: Evaluation, bundle: Bundle, missing: list[str]) -> _Outcome:
    needing = sorted(
        {r.rule_id for p, r in bundle.rules.items() if any(f"`{p}`" in e for e in evaluation.errors)}
    )
    why = "the log lacks facts rules " + ", ".join(needing) + " read" if needing else "the log lacks facts"
    return _Outcome(UNDETERMINED, False, needing, why, bundle.version, missing)


def _money(proposal: Proposal, bundle: Bundle | None) -> tuple[int | None, str | None]:
    """The amount a decision moves: the argument a budget counts, else `amount_cents`."""
    names = [b.amount_arg for b in (bundle.budgets if bundle else ()) if b.tool == proposal.tool]
    amount = next((v for n in [*names, "amount_cents"] if isinstance(v := proposal.args.get(n), int)), None)
    currency = proposal.args.get("currency")
    return amount, currency if isinstance(currency, str) else None


def replay(
    events: Iterable[Event], bundles: Mapping[str, Bundle], *, skip_unknown: bool = False
) -> list[Replayed]:
    """Every recorded decision among `events` (action.decided, action.executed and approval.decided
    in log order), re-decided under `bundles` (by workflow)."""
    return Replay(bundles, skip_unknown=skip_unknown).run(events)


def summarise(rows: list[Replayed]) -> dict[str, Any]:
    """Counts, and the money at stake per flip direction and currency."""
    money: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    no_longer: dict[str, int] = defaultdict(int)
    newly: dict[str, int] = defaultdict(int)
    for row in rows:
        if not row.flipped:
            continue
        before, after = _label(row.recorded, row.recorded_shadow), _label(row.verdict, row.shadow)
        cents, currency = row.amount_cents or 0, row.currency or ""
        entry = money[before, after, currency]
        entry[0] += cents
        entry[1] += 1
        was, now = autonomous(row.recorded, row.recorded_shadow), autonomous(row.verdict, row.shadow)
        if row.amount_cents is None:
            continue
        if was and not now:
            no_longer[currency] += cents
        elif now and not was:
            newly[currency] += cents
    replayed = [r for r in rows if r.verdict != SKIPPED]
    totals = {
        "decisions": len(rows),
        "replayed": len(replayed),
        "flipped": sum(r.flipped for r in rows),
        "unchanged": sum(r.verdict in VERDICTS and not r.flipped for r in rows),
        "undetermined": sum(r.verdict == UNDETERMINED for r in rows),
        "not_asked": sum(r.verdict == NOT_ASKED for r in rows),
        "skipped": len(rows) - len(replayed),
        "after_flip": sum(r.after_flip for r in replayed),
    }
    return {
        "totals": totals,
        "money_at_stake": [
            {"from": a, "to": b, "currency": c or None, "cents": v[0], "decisions": v[1]}
            for (a, b, c), v in sorted(money.items())
        ],
        "no_longer_autonomous_cents": dict(no_longer),
        "newly_autonomous_cents": dict(newly),
    }
