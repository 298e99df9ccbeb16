"""Counterfactual replay of recorded decisions (agentbus.policy.counterfactual), on hand-built logs."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agentbus.cli.main import app
from agentbus.policy import bundles
from agentbus.policy.counterfactual import NOT_ASKED, SKIPPED, UNDETERMINED, replay, summarise
from agentbus.shared.events import (
    ActionDecidedV1,
    ActionExecutedV1,
    ApprovalDecidedV1,
    ApprovalDecision,
    Decision,
    Event,
    Execution,
    Proposal,
)
from builders import PRODUCER, TENANT, order_result
from typer.testing import CliRunner

POLICIES = Path(__file__).resolve().parents[2] / "policies"
T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
RECORDED = "sha256:recorded"
BUNDLE = ["--bundle", str(POLICIES / "refunds")]


def bundle_with(tmp_path: Path, **thresholds: int) -> bundles.Bundle:
    """policies/refunds with some bundle.toml lines changed, e.g. autonomous_max_cents=1500."""
    directory = tmp_path / f"refunds-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(POLICIES / "refunds", directory)
    toml = directory / "bundle.toml"
    text = toml.read_text()
    for key, value in thresholds.items():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{key} ="))
        text = text.replace(line, f"{key} = {value}", 1)
    toml.write_text(text)
    return bundles.load(directory)


class Log:
    """A recorded log built step by step, one second apart, as the trace sink stores it."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def _at(self) -> datetime:
        return T0 + timedelta(seconds=len(self.events))

    def decided(
        self,
        ticket: str,
        step: int,
        tool: str,
        args: dict[str, Any],
        verdict: str,
        rules: list[str],
        **envelope: Any,
    ) -> Proposal:
        proposal = Proposal(
            action_id=f"act-{ticket}-{step}",
            workflow=envelope.pop("workflow", "refunds"),
            agent=envelope.pop("agent", "agent:refunds"),
            tool=tool,
            args=args,
            idempotency_key=f"{TENANT}:{ticket}:{step}:{tool}",
        )
        decision = Decision(
            proposal=proposal,
            verdict=verdict,  # type: ignore[arg-type]
            rule_ids=rules,
            reason="recorded",
            approval_id=envelope.pop("approval_id", None),
        )
        self.events.append(
            ActionDecidedV1(
                ticket_id=ticket,
                tenant_id=TENANT,
                producer=PRODUCER,
                occurred_at=self._at(),
                policy_version=RECORDED,
                payload=decision,
                **envelope,
            )
        )
        return proposal

    def executed(self, proposal: Proposal, result: dict[str, Any], status: str = "succeeded") -> None:
        execution = Execution(
            action_id=proposal.action_id,
            tool=proposal.tool,
            args=proposal.args,
            idempotency_key=proposal.idempotency_key,
            status=status,  # type: ignore[arg-type]
            result=result,
        )
        ticket = proposal.action_id.split("-", 1)[1].rsplit("-", 1)[0]
        self.events.append(
            ActionExecutedV1(
                ticket_id=ticket,
                tenant_id=TENANT,
                producer=PRODUCER,
                occurred_at=self._at(),
                payload=execution,
            )
        )

    def refund_ticket(self, ticket: str, order: str = "ORD-1001", cents: int = 2000, **read: Any) -> None:
        """A $`cents` refund recorded as allowed and done: read, refund, label."""
        args = {"order_id": order, "customer_id": "C-1"}
        got = self.decided(ticket, 0, "orders.get_order", args, "allow", ["order.read"])
        result = order_result(order_id=order, amount_cents=cents, tenant_id=TENANT)
        self.executed(got, {**result, **read})
        refund_args = {"order_id": order, "amount_cents": cents, "currency": "USD"}
        refund = self.decided(ticket, 1, "payments.issue_refund", refund_args, "allow", ["refund.autonomous"])
        self.executed(refund, {"refund_id": f"RF-{ticket}", "order_id": order, "amount_cents": cents})
        self.decided(
            ticket, 2, "shipping.create_return_label", {"order_id": order}, "allow", ["label.after_refund"]
        )


def by_step(rows: list) -> dict[str, Any]:
    return {r.action_id + (":approval" if r.kind == "approval" else ""): r for r in rows}


def test_the_recorded_bundle_replayed_changes_no_decision() -> None:
    log = Log()
    log.refund_ticket("T-1")
    current = bundles.load(POLICIES / "refunds")
    rows = replay(log.events, {"refunds": current})
    assert [(r.tool, r.verdict, r.rule_ids) for r in rows] == [
        ("orders.get_order", "allow", ["order.read"]),
        ("payments.issue_refund", "allow", ["refund.autonomous"]),
        # The label needs a refunded order: the refund executed after the read counts.
        ("shipping.create_return_label", "allow", ["label.after_refund"]),
    ]
    assert not any(r.flipped for r in rows)
    assert {r.version for r in rows} == {current.version} and {r.recorded_version for r in rows} == {RECORDED}
    summary = summarise(rows)
    assert summary["totals"] == {
        "decisions": 3,
        "replayed": 3,
        "flipped": 0,
        "unchanged": 3,
        "undetermined": 0,
        "not_asked": 0,
        "skipped": 0,
        "after_flip": 0,
    }
    assert summary["money_at_stake"] == [] and summary["no_longer_autonomous_cents"] == {}


def test_a_lower_autonomous_limit_flips_exactly_the_refund_above_it(tmp_path: Path) -> None:
    log = Log()
    log.refund_ticket("T-1", "ORD-1001", 2000)
    log.refund_ticket("T-2", "ORD-1005", 1200)
    rows = by_step(replay(log.events, {"refunds": bundle_with(tmp_path, autonomous_max_cents=1500)}))
    flipped = {k: (r.recorded, r.verdict, r.rule_ids) for k, r in rows.items() if r.flipped}
    assert flipped == {"act-T-1-1": ("allow", "needs_approval", ["refund.needs_approval"])}
    # The label was proposed after the refund that now waits for a human: flagged, still re-decided.
    assert rows["act-T-1-2"].after_flip and not rows["act-T-1-2"].flipped
    assert not rows["act-T-2-2"].after_flip
    summary = summarise(list(rows.values()))
    assert summary["money_at_stake"] == [
        {"from": "allow", "to": "needs_approval", "currency": "USD", "cents": 2000, "decisions": 1}
    ]
    assert summary["no_longer_autonomous_cents"] == {"USD": 2000}
    assert summary["newly_autonomous_cents"] == {}
    assert summary["totals"]["flipped"] == 1 and summary["totals"]["unchanged"] == 5


def test_a_fact_the_log_lacks_makes_the_decision_undetermined(tmp_path: Path) -> None:
    log = Log()
    log.refund_ticket("T-1", tenant_id=None)  # a reading recorded before results named the tenant
    result = order_result(tenant_id=TENANT)
    log.executed(
        log.decided(
            "T-3",
            0,
            "orders.get_order",
            {"order_id": "ORD-1002", "customer_id": "C-1"},
            "allow",
            ["order.read"],
        ),
        {**result, "order_id": "ORD-1002"},
    )
    rows = by_step(replay(log.events, {"refunds": bundle_with(tmp_path, autonomous_max_cents=1500)}))
    refund = rows["act-T-1-1"]
    assert refund.verdict == UNDETERMINED and not refund.flipped
    assert refund.missing == ["order.tenant_id of ORD-1001"]
    assert "tenant.order_mismatch" in refund.rule_ids
    assert rows["act-T-3-0"].verdict == "allow"  # a full reading: decided
    assert summarise(list(rows.values()))["totals"]["undetermined"] == 3  # read, refund, label of T-1


def test_a_decision_with_no_reading_in_the_log_is_undetermined() -> None:
    log = Log()
    log.decided(
        "T-1",
        1,
        "payments.issue_refund",
        {"order_id": "ORD-1001", "amount_cents": 2000, "currency": "USD"},
        "allow",
        ["refund.autonomous"],
    )
    (row,) = replay(log.events, {"refunds": bundles.load(POLICIES / "refunds")})
    assert row.verdict == UNDETERMINED
    assert row.missing == ["order ORD-1001 (no recorded reading before this decision)"]


def test_budgets_are_replayed_in_log_order_and_a_failed_refund_gives_its_amount_back(tmp_path: Path) -> None:
    log = Log()
    log.refund_ticket("T-1", "ORD-1001", 2000)
    log.refund_ticket("T-2", "ORD-1002", 2000)
    log.refund_ticket("T-3", "ORD-1003", 500)
    rows = by_step(replay(log.events, {"refunds": bundle_with(tmp_path, per_day=3000)}))
    assert rows["act-T-2-1"].flipped and rows["act-T-2-1"].rule_ids == ["budget.exhausted"]
    assert rows["act-T-3-1"].verdict == "allow"  # 2000 + 500 fit in 3000

    failed = Log()
    failed.refund_ticket("T-1", "ORD-1001", 2000)
    failed.events[3] = failed.events[3].model_copy(
        update={"payload": failed.events[3].payload.model_copy(update={"status": "failed", "result": {}})}
    )
    failed.refund_ticket("T-2", "ORD-1002", 2000)
    rows = by_step(replay(failed.events, {"refunds": bundle_with(tmp_path, per_day=3000)}))
    assert rows["act-T-2-1"].verdict == "allow"


def test_task_limits_count_every_proposal_of_the_ticket(tmp_path: Path) -> None:
    log = Log()
    log.refund_ticket("T-1")
    rows = by_step(replay(log.events, {"refunds": bundle_with(tmp_path, tool_calls=2)}))
    assert (rows["act-T-1-2"].verdict, rows["act-T-1-2"].rule_ids) == ("deny", ["limit.tool_calls"])
    assert [r.flipped for r in rows.values()] == [False, False, True]


def approved_refund(log: Log, cents: int = 4000, ticket: str = "T-1") -> None:
    """A refund recorded as needing approval, then approved by a refund approver."""
    log.executed(
        log.decided(
            ticket,
            0,
            "orders.get_order",
            {"order_id": "ORD-1002", "customer_id": "C-1"},
            "allow",
            ["order.read"],
        ),
        order_result(order_id="ORD-1002", amount_cents=cents, tenant_id=TENANT),
    )
    args = {"order_id": "ORD-1002", "amount_cents": cents, "currency": "USD"}
    proposal = log.decided(
        ticket, 1, "payments.issue_refund", args, "needs_approval", ["refund.needs_approval"]
    )
    approval = ApprovalDecidedV1(
        ticket_id=ticket,
        tenant_id=TENANT,
        producer=PRODUCER,
        occurred_at=log._at(),
        payload=ApprovalDecision(
            approval_id="APR-1",
            proposal=proposal,
            approved=True,
            approver="user:alice",
            role="refund-approver",
        ),
    )
    log.events.append(approval)
    log.decided(
        ticket,
        1,
        "payments.issue_refund",
        args,
        "allow",
        ["approval.granted"],
        approval_id="APR-1",
        causation_id=approval.event_id,
    )


def test_approvals_are_re_decided_or_reported_as_never_asked(tmp_path: Path) -> None:
    log = Log()
    approved_refund(log)
    same = by_step(replay(log.events, {"refunds": bundles.load(POLICIES / "refunds")}))
    assert (same["act-T-1-1:approval"].verdict, same["act-T-1-1:approval"].rule_ids) == (
        "allow",
        ["approval.granted"],
    )
    assert not any(r.flipped for r in same.values())

    wider = by_step(replay(log.events, {"refunds": bundle_with(tmp_path, autonomous_max_cents=5000)}))
    assert (wider["act-T-1-1"].recorded, wider["act-T-1-1"].verdict) == ("needs_approval", "allow")
    assert wider["act-T-1-1:approval"].verdict == NOT_ASKED and not wider["act-T-1-1:approval"].flipped
    summary = summarise(list(wider.values()))
    assert summary["newly_autonomous_cents"] == {"USD": 4000}
    assert summary["totals"]["flipped"] == 1 and summary["totals"]["not_asked"] == 1


def test_workflows_without_a_counterfactual_bundle_are_skipped_or_denied() -> None:
    log = Log()
    log.decided(
        "T-9",
        0,
        "directory.get_user",
        {"user_id": "U-100"},
        "allow",
        ["user.read"],
        workflow="it_access",
        agent="agent:it-access",
    )
    only = {"refunds": bundles.load(POLICIES / "refunds")}
    (skipped,) = replay(log.events, only, skip_unknown=True)
    assert skipped.verdict == SKIPPED and summarise([skipped])["totals"]["skipped"] == 1
    (denied,) = replay(log.events, only)
    assert (denied.verdict, denied.rule_ids, denied.flipped) == ("deny", ["workflow.unknown"], True)


def test_a_redelivered_decision_is_replayed_once() -> None:
    log = Log()
    log.refund_ticket("T-1")
    log.events.append(log.events[2].model_copy(update={"event_id": "dup"}))
    assert len(replay(log.events, {"refunds": bundles.load(POLICIES / "refunds")})) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-11-21"], "give --bundle DIR"),
        ([*BUNDLE], "give --since TIME"),
        ([*BUNDLE, "--since", "last tuesday"], "--since 'last tuesday'"),
        (
            ["--bundle", "/no/such/bundle", "--since", "2026-11-21"],
            "--bundle /no/such/bundle: no such directory",
        ),
        (
            ["--policies", "/no/such/root", "--since", "2026-11-21"],
            "--policies /no/such/root: no such directory",
        ),
        ([*BUNDLE, "--since", "2026-11-21", "--until", "2026-11-20"], "is not after"),
    ],
)
def test_bad_input_says_what_to_fix(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["replay", "counterfactual", *args, "--state-dir", str(tmp_path)], env={"DATABASE_URL": ""}
    )
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_broken_bundle_is_named_with_its_problem(tmp_path: Path) -> None:
    broken = tmp_path / "refunds"
    shutil.copytree(POLICIES / "refunds", broken)
    (broken / "rules.cedar").write_text("permit (principal, action resource);\n")
    result = CliRunner().invoke(
        app, ["replay", "counterfactual", "--bundle", str(broken), "--since", "2026-11-21"]
    )
    assert result.exit_code == 2
    assert "rules.cedar:1: Cedar syntax" in result.output
