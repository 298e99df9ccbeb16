"""The refunds contract as a deterministic state machine, one action at a time.

Pure functions over `TaskState`; no transport, no database. The planner proposes; policy decides.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agentbus.shared.events import Decision, TaskClassified, Verification

from .base import (
    TaskState,
    Transition,
    awaits,
    denied,
    new_task,
    not_eligible,
    propose,
    resolved,
    stopped_by_verifier,
)

AGENT = "agent:refunds"
WORKFLOW = "refunds"

# The refunds contract, in order. Policy is checked on every proposal; the refund comes before the
# label so that nothing is written for a refund that a human may still refuse (see README).
STEPS: tuple[tuple[str, str], ...] = (
    ("verify_order", "orders.get_order"),
    ("issue_refund", "payments.issue_refund"),
    ("create_label", "shipping.create_return_label"),
    ("reply", "helpdesk.reply_to_customer"),
    ("close", "helpdesk.close_ticket"),
)


def money(cents: int, currency: str = "USD") -> str:
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{symbol}{cents // 100}.{cents % 100:02d}"


def start(ticket_id: str, tenant_id: str, customer_id: str, order_id: str, language: str) -> Transition:
    context = {"customer_id": customer_id, "order_id": order_id, "language": language}
    return _propose(new_task(ticket_id, tenant_id, WORKFLOW, context))


def _propose(state: TaskState) -> Transition:
    name, tool = STEPS[state.step]
    ctx = state.context
    order_id = ctx["order_id"]
    args: dict[str, Any]
    extra: dict[str, Any] = {}
    if name == "verify_order":
        args = {"order_id": order_id, "customer_id": ctx["customer_id"]}
        why = "Check the order exists, belongs to the customer and is delivered."
    elif name == "issue_refund":
        args = {
            "order_id": order_id,
            "amount_cents": ctx["amount_cents"],
            "currency": ctx["currency"],
        }
        extra = {"order_amount_cents": ctx["amount_cents"], "order_status": ctx["order_status"]}
        why = f"Refund the full order amount {money(ctx['amount_cents'], ctx['currency'])}."
    elif name == "create_label":
        args = {"order_id": order_id}
        why = "Prepaid return label so the customer can send the item back."
    elif name == "reply":
        args = {"ticket_id": state.ticket_id, "body": reply_text(state)}
        why = "Tell the customer what was done."
    else:
        args = {"ticket_id": state.ticket_id, "resolution": "refunded"}
        why = "Close the ticket as resolved."
    return propose(
        state,
        agent=AGENT,
        tool=tool,
        args=args,
        rationale=why,
        context={"step": name, "customer_id": ctx["customer_id"], **extra},
    )


def reply_text(state: TaskState) -> str:
    ctx = state.context
    return (
        f"Hello, we have refunded {money(ctx['amount_cents'], ctx['currency'])} for order "
        f"{ctx['order_id']} (refund {ctx['refund_id']}). Please use the prepaid return label "
        f"{ctx['label_id']} (tracking {ctx['tracking_number']}) to send the item back."
    )


def on_verified(state: TaskState, verification: Verification) -> Transition | None:
    """Advance after a verified action; None when the event is not for the pending action."""
    if not awaits(state, verification.action_id):
        return None
    if not verification.verified:
        return stopped_by_verifier(state)
    name, _ = STEPS[state.step]
    ctx = dict(state.context)
    result = verification.result
    if name == "verify_order":
        problem = _ineligibility(ctx, result)
        if problem:
            return not_eligible(
                state,
                ctx,
                problem,
                details={"order_id": ctx["order_id"], "order": result},
                rule_id="workflow.refunds.order_must_be_delivered",
            )
        ctx.update(
            amount_cents=result["amount_cents"],
            currency=result["currency"],
            order_status=result["status"],
        )
    elif name == "issue_refund":
        ctx["refund_id"] = result["refund_id"]
    elif name == "create_label":
        ctx.update(label_id=result["label_id"], tracking_number=result["tracking_number"])
    elif name == "reply":
        ctx["reply_id"] = result["reply_id"]
    done = [*ctx.get("done", []), verification.action_id]
    ctx["done"] = done
    if state.step + 1 == len(STEPS):
        return resolved(
            state,
            ctx,
            summary=(
                f"Refunded {money(ctx['amount_cents'], ctx['currency'])} for {ctx['order_id']}, "
                f"return label {ctx['label_id']}, customer told, ticket closed."
            ),
            done=done,
        )
    return _propose(replace(state, step=state.step + 1, context=ctx))


def _ineligibility(ctx: dict[str, Any], order: dict[str, Any]) -> str | None:
    order_id = ctx["order_id"]
    if not order.get("found"):
        return f"Order {order_id} was not found; the refund request cannot be checked."
    if not order.get("customer_matches"):
        return f"Order {order_id} does not belong to customer {ctx['customer_id']}."
    if order.get("status") != "delivered":
        return (
            f"Order {order_id} is not eligible for a refund yet: its status is "
            f"{order.get('status')!r} and refunds need a delivered order "
            f"({money(order['amount_cents'], order['currency'])})."
        )
    if order.get("refunded_cents", 0) > 0:
        refunded = money(order["refunded_cents"], order["currency"])
        return f"Order {order_id} has already been refunded ({refunded})."
    return None


def on_denied(state: TaskState, decision: Decision) -> Transition | None:
    """A deny of the pending action hands the task to a human with a prefilled summary."""
    if not awaits(state, decision.proposal.action_id):
        return None
    proposal = decision.proposal
    ctx = state.context
    amount = ctx.get("amount_cents")
    what = proposal.tool
    if proposal.tool == "payments.issue_refund" and amount is not None:
        what = f"refund of {money(amount, ctx['currency'])} for order {ctx['order_id']}"
    details = {
        "order_id": ctx.get("order_id"),
        "amount_cents": amount,
        "currency": ctx.get("currency"),
        "customer_id": ctx.get("customer_id"),
    }
    return denied(state, decision, what, details)


class Refunds:
    """The refunds state machine behind the `Planner` interface."""

    name = WORKFLOW

    def start(self, ticket_id: str, tenant_id: str, task: TaskClassified) -> Transition | None:
        if task.workflow != WORKFLOW or task.order_id is None:
            return None
        return start(ticket_id, tenant_id, task.customer_id, task.order_id, task.language)

    def on_verified(self, state: TaskState, verification: Verification) -> Transition | None:
        return on_verified(state, verification)

    def on_denied(self, state: TaskState, decision: Decision) -> Transition | None:
        return on_denied(state, decision)
