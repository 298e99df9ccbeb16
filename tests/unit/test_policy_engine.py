"""The policy engine on the real bundles: identity, tool lists, argument schemas, Cedar rules with
facts, rollout modes and approvals. Facts are given as data, as the decider's fact source would."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import builders
import pytest
from agentbus.policy import bundles, engine
from agentbus.policy.bundles import Bundle
from agentbus.shared.events import ApprovalDecision, Proposal

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def refunds() -> Bundle:
    return bundles.load(POLICIES / "refunds")


@pytest.fixture(scope="module")
def it_access() -> Bundle:
    return bundles.load(POLICIES / "it_access")


def order(**overrides: Any) -> dict[str, Any]:
    data = {
        "found": True,
        "tenant_id": "acme",
        "amount_cents": 8000,
        "refunded_cents": 0,
        "status": "delivered",
        "currency": "USD",
    }
    return {"order": {**data, **overrides}}


def refund(amount: Any = 2000, **args: Any) -> Proposal:
    return builders.proposal(args={"order_id": "ORD-1003", "amount_cents": amount, "currency": "USD", **args})


def decide(
    bundle: Bundle, proposal: Proposal, facts: dict[str, Any] | None = None, **kw: Any
) -> engine.Evaluation:
    return engine.evaluate(
        proposal,
        bundle,
        ticket_id=kw.get("ticket_id", "T-1"),
        tenant_id=kw.get("tenant_id", "acme"),
        facts=order() if facts is None else facts,
    )


@pytest.mark.parametrize(
    ("amount", "verdict", "rule", "section"),
    [
        (1, "allow", "refund.autonomous", "§3.1"),
        (2500, "allow", "refund.autonomous", "§3.1"),
        (2501, "needs_approval", "refund.needs_approval", "§3.2"),
        (5000, "needs_approval", "refund.needs_approval", "§3.2"),
        (5001, "deny", "refund.above_approval_limit", "§3.3"),
        (8000, "deny", "refund.above_approval_limit", "§3.3"),
    ],
)
def test_refund_thresholds(refunds: Bundle, amount: int, verdict: str, rule: str, section: str) -> None:
    result = decide(refunds, refund(amount))
    assert (result.verdict, result.rule_ids) == (verdict, [rule])
    assert section in result.reason


@pytest.mark.parametrize(
    ("facts", "rule"),
    [
        (order(tenant_id="globex"), "tenant.order_mismatch"),
        (order(status="in_transit"), "refund.order_not_delivered"),
        (order(amount_cents=1500), "refund.exceeds_order"),
        (order(refunded_cents=7000), "refund.exceeds_order"),
        ({"order": {"found": False}}, "refund.exceeds_order"),
        (order(currency="EUR"), "refund.wrong_currency"),
    ],
)
def test_facts_from_the_system_of_record_deny_what_the_planner_cannot_see(
    refunds: Bundle, facts: dict[str, Any], rule: str
) -> None:
    result = decide(refunds, refund(2000), facts)
    assert result.verdict == "deny" and rule in result.rule_ids


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ({"order_id": "ORD-1003", "amount_cents": "lots", "currency": "USD"}, "amount_cents"),
        ({"order_id": "ORD-1003", "amount_cents": 0, "currency": "USD"}, "amount_cents"),
        ({"order_id": "1003; DROP TABLE", "amount_cents": 100, "currency": "USD"}, "order_id"),
        ({"order_id": "ORD-1003", "amount_cents": 100, "currency": "USD", "to": "attacker"}, "(arguments)"),
        ({"order_id": "ORD-1003", "currency": "USD"}, "(arguments)"),
    ],
)
def test_arguments_outside_the_schema_are_denied_with_the_schema_error(
    refunds: Bundle, args: dict[str, Any], where: str
) -> None:
    result = decide(refunds, builders.proposal(args=args))
    assert (result.verdict, result.rule_ids) == ("deny", ["args.invalid"])
    assert where in result.reason and "§1.4" in result.reason


def test_identity_and_tool_lists(refunds: Bundle) -> None:
    assert decide(refunds, refund().model_copy(update={"agent": "agent:other"})).rule_ids == [
        "agent.mismatch"
    ]
    assert decide(refunds, builders.proposal(tool="payments.wire_transfer")).rule_ids == ["tool.denied"]
    assert decide(refunds, builders.proposal(tool="shell.exec")).rule_ids == ["tool.not_allowed"]


def test_replies_only_on_the_ticket_being_worked(refunds: Bundle) -> None:
    reply = builders.proposal(tool="helpdesk.reply_to_customer", args={"ticket_id": "T-1", "body": "hi"})
    assert decide(refunds, reply, {}).verdict == "allow"
    other = reply.model_copy(update={"args": {"ticket_id": "T-2", "body": "hi"}})
    assert decide(refunds, other, {}).rule_ids == ["rules.no_permit"]


def test_labels_only_for_refunded_orders(refunds: Bundle) -> None:
    label = builders.proposal(tool="shipping.create_return_label", args={"order_id": "ORD-1003"})
    assert decide(refunds, label, order(refunded_cents=8000)).verdict == "allow"
    assert decide(refunds, label, order()).rule_ids == ["rules.no_permit"]


def test_admin_groups_always_need_approval(it_access: Bundle) -> None:
    def grant(admin: bool, status: str = "active", tenant: str = "acme") -> engine.Evaluation:
        proposal = builders.proposal(
            agent="agent:it-access",
            workflow="it_access",
            tool="directory.add_to_group",
            args={"user_id": "U-100", "group_id": "grp-x"},
        )
        facts = {
            "user": {"found": True, "tenant_id": "acme", "status": status},
            "group": {"found": True, "tenant_id": tenant, "admin": admin},
        }
        return decide(it_access, proposal, facts)

    assert grant(admin=False).rule_ids == ["group.standard"]
    assert grant(admin=True).verdict == "needs_approval"
    assert grant(admin=True).rule_ids == ["group.admin_needs_approval"]
    assert grant(admin=False, status="disabled").verdict == "deny"
    assert grant(admin=False, tenant="globex").rule_ids == ["tenant.user_mismatch"]


def test_rollout_modes(refunds: Bundle) -> None:
    shadow = replace(refunds, rollout="shadow")
    result = decide(shadow, refund(2000))
    assert result.verdict == "allow" and "rollout.shadow" in result.rule_ids
    assert result.decision(refund(2000), shadow).rollout == "shadow"

    approval = replace(refunds, rollout="approval")
    assert decide(approval, refund(2000)).verdict == "needs_approval"
    read = builders.proposal(tool="orders.get_order", args={"order_id": "ORD-1003", "customer_id": "C-1"})
    assert decide(approval, read).verdict == "allow"  # reads are not writes

    expanded = replace(refunds, rollout="expanded")
    assert decide(expanded, refund(4000)).rule_ids == ["refund.autonomous"]
    assert decide(refunds, refund(4000)).rule_ids == ["refund.needs_approval"]


def approval(proposal: Proposal, approved: bool = True, role: str = "refund-approver") -> ApprovalDecision:
    return ApprovalDecision(
        approval_id="AP-1", proposal=proposal, approved=approved, approver="user:alice", role=role
    )


def test_approval_releases_only_the_pending_proposal_while_it_still_needs_approval(refunds: Bundle) -> None:
    pending = refund(4000)
    current = decide(refunds, pending)
    assert engine.resolve_approval(approval(pending), pending, current, refunds).rule_ids == [
        "approval.granted"
    ]
    assert engine.resolve_approval(approval(pending), None, current, refunds).rule_ids == [
        "approval.unmatched"
    ]
    bigger = refund(8000)
    assert engine.resolve_approval(approval(bigger), pending, current, refunds).rule_ids == [
        "approval.unmatched"
    ]
    wrong_role = engine.resolve_approval(approval(pending, role="viewer"), pending, current, refunds)
    assert (wrong_role.verdict, wrong_role.rule_ids) == ("deny", ["approval.rejected"])
    assert (
        engine.resolve_approval(approval(pending, approved=False), pending, current, refunds).verdict
        == "deny"
    )
    # The order was refunded meanwhile: policy's current verdict stands over the approval.
    now = decide(refunds, pending, order(refunded_cents=8000))
    # (With what was refunded, the total is also above the approval limit: both forbids cite.)
    assert sorted(engine.resolve_approval(approval(pending), pending, now, refunds).rule_ids) == [
        "refund.above_approval_limit",
        "refund.exceeds_order",
    ]


def test_check_names_file_line_and_problem(tmp_path: Path) -> None:
    bundle = tmp_path / "refunds"
    shutil.copytree(POLICIES / "refunds", bundle)
    cedar = bundle / "rules.cedar"
    cedar.write_text(cedar.read_text().replace("<= context.thresholds.autonomous_max_cents", "<== 3"))
    toml = bundle / "bundle.toml"
    toml.write_text(toml.read_text().replace('rollout = "limited"', 'rollout = "yolo"'))
    with pytest.raises(bundles.BundleError) as caught:
        bundles.load(bundle)
    found = {(p.file.name, p.line) for p in caught.value.problems}
    statement = next(
        n for n, line in enumerate(cedar.read_text().splitlines(), 1) if '@id("refund.autonomous")' in line
    )
    assert ("rules.cedar", statement) in found  # the broken statement, from its first line
    toml_line = next(
        n for n, line in enumerate(toml.read_text().splitlines(), 1) if line.startswith("rollout")
    )
    assert ("bundle.toml", toml_line) in found
    assert any("Cedar syntax" in p.message for p in caught.value.problems)


def test_version_covers_both_files_and_a_broken_edit_keeps_the_last_good_one(tmp_path: Path) -> None:
    shutil.copytree(POLICIES / "refunds", tmp_path / "refunds")
    loaded = bundles.BundleSet(tmp_path)
    first = loaded.get("refunds")
    assert first is not None
    cedar = tmp_path / "refunds" / "rules.cedar"
    cedar.write_text(cedar.read_text() + "\n// reviewed\n")

    os.utime(cedar, (cedar.stat().st_mtime + 5, cedar.stat().st_mtime + 5))
    second = loaded.get("refunds")
    assert second is not None and second.version != first.version
    cedar.write_text("permit (")
    os.utime(cedar, (cedar.stat().st_mtime + 10, cedar.stat().st_mtime + 10))
    assert loaded.get("refunds") == second  # broken edit: last good version stays in force
