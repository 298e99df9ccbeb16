"""Refund policy from the committed bundle: thresholds, tools, agent, approvals, reload."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from agentbus.policy.rules import Bundle, BundleFile, decide, decide_approval
from agentbus.shared.events import ApprovalDecision
from builders import proposal

BUNDLE_PATH = Path(__file__).resolve().parents[2] / "policies" / "refunds" / "bundle.toml"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return Bundle.parse(BUNDLE_PATH.read_bytes())


def refund(amount: Any) -> Any:
    return proposal(args={"order_id": "ORD-1001", "amount_cents": amount, "currency": "USD"})


def test_bundle_fields(bundle: Bundle) -> None:
    assert bundle.workflow == "refunds"
    assert bundle.agent == "agent:refunds"
    assert bundle.autonomous_max_cents == 2500
    assert bundle.approval_max_cents == 5000
    assert bundle.approver_role == "refund-approver"
    assert "payments.issue_refund" in bundle.allowed_tools


@pytest.mark.parametrize("amount", [1, 2000, 2500])
def test_small_refunds_are_autonomous(bundle: Bundle, amount: int) -> None:
    d = decide(refund(amount), bundle)
    assert d.verdict == "allow"
    assert d.rule_ids == ["refund.autonomous"]
    assert "§3.1" in d.reason


def test_reason_shows_the_amount(bundle: Bundle) -> None:
    assert "$20.00" in decide(refund(2000), bundle).reason


@pytest.mark.parametrize("amount", [2501, 4000, 5000])
def test_middle_refunds_need_approval(bundle: Bundle, amount: int) -> None:
    d = decide(refund(amount), bundle)
    assert d.verdict == "needs_approval"
    assert d.rule_ids == ["refund.needs_approval"]
    assert "§3.2" in d.reason
    assert "refund-approver" in d.reason


@pytest.mark.parametrize("amount", [5001, 8000])
def test_large_refunds_are_denied(bundle: Bundle, amount: int) -> None:
    d = decide(refund(amount), bundle)
    assert d.verdict == "deny"
    assert d.rule_ids == ["refund.above_approval_limit"]
    assert "§3.3" in d.reason


@pytest.mark.parametrize(
    "tool",
    [
        "orders.get_order",
        "shipping.create_return_label",
        "helpdesk.reply_to_customer",
        "helpdesk.close_ticket",
    ],
)
def test_other_allowed_tools_are_allowed(bundle: Bundle, tool: str) -> None:
    d = decide(proposal(tool=tool, args={"order_id": "ORD-1001"}), bundle)
    assert d.verdict == "allow"
    assert d.rule_ids == ["tool.allowed"]
    assert "§2.1" in d.reason


def test_unknown_tool_is_denied(bundle: Bundle) -> None:
    d = decide(proposal(tool="payments.wire_transfer"), bundle)
    assert d.verdict == "deny"
    assert d.rule_ids == ["tool.not_allowed"]
    assert "§2.2" in d.reason


def test_wrong_agent_is_denied_even_for_a_small_refund(bundle: Bundle) -> None:
    d = decide(proposal(agent="agent:sales"), bundle)
    assert d.verdict == "deny"
    assert d.rule_ids == ["agent.mismatch"]
    assert "agent:sales" in d.reason


@pytest.mark.parametrize("amount", [0, -100, "2000", True, 20.0, None])
def test_invalid_amounts_are_denied(bundle: Bundle, amount: Any) -> None:
    d = decide(refund(amount), bundle)
    assert d.verdict == "deny"
    assert d.rule_ids == ["refund.invalid_amount"]
    assert "§3.4" in d.reason


def test_missing_amount_is_denied(bundle: Bundle) -> None:
    d = decide(proposal(args={"order_id": "ORD-1001"}), bundle)
    assert d.rule_ids == ["refund.invalid_amount"]


def test_decision_carries_the_proposal(bundle: Bundle) -> None:
    p = refund(2000)
    d = decide(p, bundle)
    assert d.proposal == p
    assert d.approval_id is None


def test_version_is_a_content_hash() -> None:
    raw = BUNDLE_PATH.read_bytes()
    a, b = Bundle.parse(raw), Bundle.parse(raw)
    assert a.version.startswith("sha256:")
    assert a.version == b.version
    edited = raw.replace(b"autonomous_max_cents = 2500", b"autonomous_max_cents = 2400")
    changed = Bundle.parse(edited)
    assert changed.autonomous_max_cents == 2400
    assert changed.version != a.version
    assert Bundle.parse(raw + b"\n# comment\n").version != a.version


def test_bundle_file_reloads_after_a_change(tmp_path: Path) -> None:
    path = tmp_path / "bundle.toml"
    raw = BUNDLE_PATH.read_bytes()
    path.write_bytes(raw)
    source = BundleFile(path)
    first = source.current()
    assert source.current() is first  # unchanged file: cached
    assert decide(refund(2400), first).verdict == "allow"

    path.write_bytes(raw.replace(b"autonomous_max_cents = 2500", b"autonomous_max_cents = 1000"))
    st = path.stat()
    os.utime(path, (st.st_atime + 10, st.st_mtime + 10))
    second = source.current()
    assert second.version != first.version
    assert second.autonomous_max_cents == 1000
    assert decide(refund(2400), second).verdict == "needs_approval"


def approval(approved: bool, role: str = "refund-approver") -> ApprovalDecision:
    return ApprovalDecision(
        approval_id="APR-7",
        proposal=refund(4000),
        approved=approved,
        approver="user:alice",
        role=role,
        reason="ok",
    )


def test_approval_by_the_approver_role_allows(bundle: Bundle) -> None:
    d = decide_approval(approval(True), bundle, refund(4000))
    assert d.verdict == "allow"
    assert d.rule_ids == ["approval.granted"]
    assert d.approval_id == "APR-7"
    assert "user:alice" in d.reason
    assert "§4.1" in d.reason
    assert d.proposal == refund(4000)


def test_approval_by_a_wrong_role_is_denied(bundle: Bundle) -> None:
    d = decide_approval(approval(True, role="support-agent"), bundle, refund(4000))
    assert d.verdict == "deny"
    assert d.rule_ids == ["approval.rejected"]
    assert "refund-approver" in d.reason
    assert d.approval_id == "APR-7"


def test_rejection_is_denied(bundle: Bundle) -> None:
    d = decide_approval(approval(False), bundle, refund(4000))
    assert d.verdict == "deny"
    assert d.rule_ids == ["approval.rejected"]
    assert "§4.2" in d.reason
    assert d.approval_id == "APR-7"
