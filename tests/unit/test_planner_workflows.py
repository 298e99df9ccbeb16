"""Refunds workflow state machine: proposals, advancing on verification, escalations on denial."""

from __future__ import annotations

from typing import Any

import pytest
from agentbus.planner.workflows import refunds as workflows
from agentbus.planner.workflows.base import TaskState, Transition
from agentbus.planner.workflows.refunds import STEPS, on_denied, on_verified, start
from agentbus.shared.events import Decision, Verification
from builders import order_result

TICKET, TENANT, CUSTOMER, ORDER = "T-9", "acme", "C-1", "ORD-1003"


def begin(order_id: str = ORDER) -> Transition:
    return start(TICKET, TENANT, CUSTOMER, order_id, "en")


def verified(state: TaskState, result: dict[str, Any], ok: bool = True) -> Verification:
    assert state.pending_action_id is not None
    return Verification(
        action_id=state.pending_action_id,
        tool=STEPS[state.step][1],
        verified=ok,
        check="test_check",
        result=result,
    )


# What each executor tool returns (see services/executor/src/agentbus/executor/tools.py).
def tool_results(amount_cents: int = 8000) -> list[dict[str, Any]]:
    return [
        order_result(order_id=ORDER, amount_cents=amount_cents),
        {
            "refund_id": "RF-0A1B2C3D4E",
            "order_id": ORDER,
            "amount_cents": amount_cents,
            "currency": "USD",
        },
        {"label_id": "LBL-AAAA", "order_id": ORDER, "tracking_number": "TRK-BBBB"},
        {"reply_id": "RPL-CCCC", "ticket_id": TICKET},
        {"ticket_id": TICKET, "status": "closed"},
    ]


def advance_to(step_name: str, amount_cents: int = 8000) -> Transition:
    """Run the happy path until the proposal for `step_name` is pending."""
    t = begin()
    results = tool_results(amount_cents)
    while STEPS[t.state.step][0] != step_name:
        nxt = on_verified(t.state, verified(t.state, results[t.state.step]))
        assert nxt is not None
        t = nxt
    return t


def deny(t: Transition, rule: str, reason: str = "because") -> Decision:
    """Policy's deny of the proposal `t` published."""
    assert t.proposal is not None
    return Decision(proposal=t.proposal, verdict="deny", rule_ids=[rule], reason=reason)


def test_start_proposes_get_order_with_the_right_args() -> None:
    t = begin()
    p = t.proposal
    assert p is not None
    assert p.tool == "orders.get_order"
    assert p.args == {"order_id": ORDER, "customer_id": CUSTOMER}
    assert p.agent == "agent:refunds"
    assert p.workflow == "refunds"
    assert p.context["step"] == "verify_order"
    assert t.state.state == "running"
    assert t.state.step == 0
    assert t.state.pending_action_id == p.action_id
    assert t.escalation is None and t.finished is None


def test_start_ids_are_deterministic() -> None:
    a, b = begin().proposal, begin().proposal
    assert a is not None and b is not None
    assert a.action_id == b.action_id == f"act-{TICKET}-0"
    assert a.idempotency_key == b.idempotency_key == f"{TENANT}:{TICKET}:0:orders.get_order"
    other = start("T-10", TENANT, CUSTOMER, ORDER, "en").proposal
    assert other is not None
    assert other.action_id != a.action_id
    assert other.idempotency_key != a.idempotency_key


def test_happy_path_resolves_with_every_tool_in_order() -> None:
    t = begin()
    tools = []
    action_ids = []
    for result in tool_results():
        assert t.proposal is not None
        tools.append(t.proposal.tool)
        action_ids.append(t.proposal.action_id)
        nxt = on_verified(t.state, verified(t.state, result))
        assert nxt is not None
        t = nxt
    assert tools == [tool for _, tool in STEPS]
    assert len(set(action_ids)) == len(STEPS)
    assert t.finished is not None
    assert t.finished.outcome == "resolved"
    assert t.finished.actions == action_ids
    assert "$80.00" in t.finished.summary and ORDER in t.finished.summary
    assert "LBL-AAAA" in t.finished.summary
    assert t.proposal is None and t.escalation is None
    assert t.state.state == "resolved"
    assert t.state.pending_action_id is None


def test_refund_proposal_carries_order_amount_and_facts() -> None:
    t = advance_to("issue_refund")
    p = t.proposal
    assert p is not None
    assert p.tool == "payments.issue_refund"
    assert p.args == {"order_id": ORDER, "amount_cents": 8000, "currency": "USD"}
    assert p.context["order_amount_cents"] == 8000
    assert p.context["order_status"] == "delivered"
    assert p.idempotency_key == f"{TENANT}:{TICKET}:1:payments.issue_refund"
    assert "$80.00" in p.rationale


def test_reply_names_refund_label_and_tracking() -> None:
    t = advance_to("reply")
    p = t.proposal
    assert p is not None
    body = p.args["body"]
    assert isinstance(body, str)
    for fact in ("$80.00", ORDER, "RF-0A1B2C3D4E", "LBL-AAAA", "TRK-BBBB"):
        assert fact in body
    assert p.args["ticket_id"] == TICKET


def test_order_in_transit_escalates_not_eligible() -> None:
    t = begin()
    nxt = on_verified(t.state, verified(t.state, order_result(order_id=ORDER, status="in_transit")))
    assert nxt is not None
    assert nxt.proposal is None and nxt.finished is None
    assert nxt.escalation is not None
    assert nxt.escalation.reason == "not_eligible"
    assert ORDER in nxt.escalation.summary
    assert "in_transit" in nxt.escalation.summary
    assert nxt.escalation.details["order_id"] == ORDER
    assert nxt.state.state == "escalated"
    assert nxt.state.pending_action_id is None


@pytest.mark.parametrize(
    ("result", "phrase"),
    [
        (order_result(customer_matches=False), "does not belong to customer C-1"),
        (order_result(refunded_cents=2000), "already been refunded"),
        ({"found": False, "order_id": ORDER}, "was not found"),
    ],
    ids=["wrong_customer", "already_refunded", "not_found"],
)
def test_ineligible_orders_escalate(result: dict[str, Any], phrase: str) -> None:
    t = begin()
    nxt = on_verified(t.state, verified(t.state, result))
    assert nxt is not None
    assert nxt.escalation is not None
    assert nxt.escalation.reason == "not_eligible"
    assert phrase in nxt.escalation.summary
    assert ORDER in nxt.escalation.summary
    assert nxt.proposal is None
    assert nxt.state.state == "escalated"


def test_verification_for_another_action_is_ignored() -> None:
    t = begin()
    stray = Verification(
        action_id="act-T-9-7",
        tool="orders.get_order",
        verified=True,
        check="x",
        result=order_result(),
    )
    assert on_verified(t.state, stray) is None


def test_verification_after_the_task_ended_is_ignored() -> None:
    t = begin()
    v = verified(t.state, order_result(status="in_transit"))
    ended = on_verified(t.state, v)
    assert ended is not None
    assert on_verified(ended.state, v) is None


def test_failed_verification_escalates_without_a_new_proposal() -> None:
    t = advance_to("issue_refund")
    nxt = on_verified(t.state, verified(t.state, {}, ok=False))
    assert nxt is not None
    assert nxt.state.state == "escalated"
    assert nxt.state.pending_action_id is None
    assert nxt.proposal is None
    assert nxt.escalation is None  # the verifier has already asked for a human
    assert nxt.finished is None


def test_denied_refund_escalates_with_order_amount_and_rule() -> None:
    t = advance_to("issue_refund")
    decision = deny(t, "refund.above_approval_limit", "A $80.00 refund is above every limit")
    nxt = on_denied(t.state, decision)
    assert nxt is not None
    esc = nxt.escalation
    assert esc is not None
    assert esc.reason == "policy_denied"
    assert ORDER in esc.summary
    assert "$80.00" in esc.summary
    assert "refund.above_approval_limit" in esc.summary
    assert esc.rule_ids == ["refund.above_approval_limit"]
    assert esc.details["amount_cents"] == 8000
    assert esc.details["order_id"] == ORDER
    assert nxt.state.state == "escalated"
    assert nxt.state.pending_action_id is None
    assert nxt.proposal is None


def test_rejected_approval_gives_reason_approval_rejected() -> None:
    t = advance_to("issue_refund", amount_cents=4000)
    nxt = on_denied(t.state, deny(t, "approval.rejected", "Rejected by user:alice"))
    assert nxt is not None
    assert nxt.escalation is not None
    assert nxt.escalation.reason == "approval_rejected"
    assert "$40.00" in nxt.escalation.summary


def test_denial_of_a_non_pending_action_is_ignored() -> None:
    t = advance_to("issue_refund")
    earlier = Decision(proposal=begin().proposal, verdict="deny", rule_ids=["tool.not_allowed"], reason="x")
    assert on_denied(t.state, earlier) is None


def test_denied_non_refund_tool_names_the_tool() -> None:
    t = begin()
    nxt = on_denied(t.state, deny(t, "tool.not_allowed"))
    assert nxt is not None
    assert nxt.escalation is not None
    assert "orders.get_order" in nxt.escalation.summary
    assert nxt.escalation.reason == "policy_denied"


@pytest.mark.parametrize(
    ("cents", "currency", "shown"),
    [(8000, "USD", "$80.00"), (5, "USD", "$0.05"), (1999, "EUR", "EUR 19.99")],
)
def test_money(cents: int, currency: str, shown: str) -> None:
    assert workflows.money(cents, currency) == shown
