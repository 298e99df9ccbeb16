"""Facts for a counterfactual decision, rebuilt from recorded tool results (the log), in the shape
`facts.PgFacts` reads from the systems of record; what the log cannot tell is named as missing."""

from __future__ import annotations

from typing import Any

from agentbus.shared.events import Execution, Proposal

ORDER_READ = "orders.get_order"
USER_READ = "directory.get_user"
# Writes that change a fact the decider reads: tool -> the result field holding the refunded cents.
REFUNDS = {"payments.issue_refund": "amount_cents"}

# The fields PgFacts gives a found record; a rule that reads one the log lacks cannot be re-decided.
FIELDS = {
    "order": ("tenant_id", "customer_id", "amount_cents", "currency", "status", "refunded_cents"),
    "user": ("tenant_id", "status"),
    "group": ("tenant_id", "admin"),
}
# Proposal argument naming each record, as PgFacts looks them up.
KEYS = {"order": "order_id", "user": "user_id", "group": "group_id"}


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def snapshot(execution: Execution) -> dict[tuple[str, str], dict[str, Any]]:
    """The records a successful read saw, keyed by (kind, id); empty for anything else."""
    if execution.status != "succeeded" or execution.duplicate:
        return {}  # a duplicate returns the first call's stored result: not a fresh reading
    args, result = execution.args, execution.result
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if execution.tool == ORDER_READ and isinstance(order_id := args.get("order_id"), str):
        if result.get("found") is not True:
            out["order", order_id] = {"found": False}
        else:
            # The tool reports whether the order belongs to the customer asked about, not the owner:
            # the owner is known only when it matched.
            owner = args.get("customer_id") if result.get("customer_matches") is True else None
            out["order", order_id] = _present(
                found=True,
                tenant_id=result.get("tenant_id"),
                customer_id=owner,
                amount_cents=result.get("amount_cents"),
                currency=result.get("currency"),
                status=result.get("status"),
                refunded_cents=result.get("refunded_cents"),
            )
    if execution.tool == USER_READ:
        if isinstance(user_id := args.get("user_id"), str):
            if result.get("found") is not True:
                out["user", user_id] = {"found": False}
            else:
                out["user", user_id] = _present(
                    found=True, tenant_id=result.get("tenant_id"), status=result.get("status")
                )
        if isinstance(group_id := args.get("group_id"), str) and "group_found" in result:
            if result.get("group_found") is not True:
                out["group", group_id] = {"found": False}
            else:
                out["group", group_id] = _present(
                    found=True, tenant_id=result.get("group_tenant"), admin=result.get("group_admin")
                )
    return out


class LogFacts:
    """What the log says about orders, users and groups, as of the last event observed."""

    def __init__(self, executions: dict[str, Execution]) -> None:
        # Every execution by action id: a read's own result stands in for the facts the decider read
        # just before it, when the log holds no earlier reading.
        self.executions = executions
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

    def observe(self, execution: Execution) -> None:
        self.records.update(snapshot(execution))
        field = REFUNDS.get(execution.tool)
        if field is None or execution.status != "succeeded" or execution.duplicate:
            return
        order_id, amount = execution.args.get("order_id"), execution.result.get(field)
        if not isinstance(order_id, str):
            return
        order = self.records.get(("order", order_id))
        # Without an earlier reading the refund is already in whatever reading comes later.
        if order and isinstance(amount, int) and isinstance(order.get("refunded_cents"), int):
            self.records["order", order_id] = {**order, "refunded_cents": order["refunded_cents"] + amount}

    def facts(self, proposal: Proposal) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """The facts for this proposal, and those the log cannot supply as (Cedar attribute, what),
        e.g. ("tenant_id", "order.tenant_id of ORD-1001")."""
        own = self.executions.get(proposal.action_id)
        own_view = snapshot(own) if own is not None else {}
        facts: dict[str, Any] = {}
        missing: list[tuple[str, str]] = []
        for kind, arg in KEYS.items():
            key = proposal.args.get(arg)
            if not isinstance(key, str):
                continue
            record = self.records.get((kind, key)) or own_view.get((kind, key))
            if record is None:
                missing.append((kind, f"{kind} {key} (no recorded reading before this decision)"))
                continue
            facts[kind] = record
            if record.get("found"):
                missing += [(f, f"{kind}.{f} of {key}") for f in FIELDS[kind] if f not in record]
        return facts, missing
