"""Regression tests for defects found in review: approvals, console robustness, decode, CLI input."""

from __future__ import annotations

from pathlib import Path

import builders
import orjson
import pytest
from agentbus.cli.main import app
from agentbus.console.view import TicketView
from agentbus.planner.workflows.refunds import on_verified, start
from agentbus.policy import bundles, engine
from agentbus.shared.events import (
    ApprovalDecision,
    DecodeError,
    TicketReceivedV1,
    Verification,
    decode,
)
from agentbus.shared.serialization import dumps, loads
from typer.testing import CliRunner

BUNDLE = Path(__file__).resolve().parents[2] / "policies" / "refunds"


# Regression 1 (policy/rules.py decide_approval): an approval grants `allow` for whatever proposal the
# approval event carries, without re-checking agent, tool or the §3.3 approval ceiling.
@pytest.mark.parametrize(
    "proposal",
    [
        builders.proposal(args={"order_id": "ORD-1003", "amount_cents": 800_000, "currency": "USD"}),
        builders.proposal(tool="payments.wire_transfer"),
        builders.proposal(agent="agent:other"),
    ],
    ids=["above_approval_limit", "tool_not_allowed", "wrong_agent"],
)
def test_approval_cannot_widen_policy(proposal: object) -> None:
    bundle = bundles.load(BUNDLE)
    approval = ApprovalDecision(
        approval_id="APR-1",
        proposal=proposal,  # type: ignore[arg-type]
        approved=True,
        approver="user:bob",
        role="refund-approver",
    )
    # Even when the malicious proposal is what was pending, policy re-checks it: no widening.
    current = engine.evaluate(proposal, bundle, ticket_id="T-1", tenant_id="acme", facts={})  # type: ignore[arg-type]
    assert engine.resolve_approval(approval, proposal, current, bundle).verdict == "deny"  # type: ignore[arg-type]
    assert engine.resolve_approval(approval, None, current, bundle).rule_ids == ["approval.unmatched"]


# Regression 2 (console/view.py TicketView.summary): a JSON event whose payload is not an object (an
# invalid upstream event the intake dead-letters) is stored and then breaks summary() -> HTTP 500
# on /api/tickets until the ticket is evicted.
def test_console_summary_survives_an_invalid_event() -> None:
    view = TicketView()
    view.add_raw(
        b'{"event_id": "e1", "type": "ticket.received", "version": 1, "ticket_id": "T-BAD",'
        b' "occurred_at": "2025-01-01T00:00:00Z", "payload": "oops"}'
    )
    view.add_raw(dumps(builders.event(TicketReceivedV1, ticket_id="T-OK")))
    assert next(r["ticket_id"] for r in view.summary()) == "T-OK"


# Regression 3 (console/view.py TicketView.add_raw): an unhashable event_id raises outside the try on
# every attempt; subscribe_batch retries a failing batch forever, so the console stops updating.
def test_console_ignores_unhashable_event_id() -> None:
    view = TicketView()
    view.add_raw(b'{"event_id": ["x"], "type": "ticket.received", "ticket_id": "T-1"}')
    assert view.tickets == {}


# Regression 4 (shared/events/registry.py decode): `"version": true` passes isinstance(version, int) and
# (type, True) == (type, 1), so decode accepts an event the published schema (const 1) rejects.
def test_decode_rejects_boolean_version() -> None:
    obj = loads(dumps(builders.event(TicketReceivedV1)))
    obj["version"] = True
    with pytest.raises(DecodeError):
        decode(orjson.dumps(obj))


# Regression 5 (planner/workflows/refunds.py _ineligibility): the already-refunded amount ignores the order's
# currency and always prints dollars.
def test_already_refunded_summary_uses_the_order_currency() -> None:
    t = start("T-1", "acme", "C-1", "ORD-1001", "en")
    assert t.state.pending_action_id is not None
    result = builders.order_result(currency="EUR", refunded_cents=1000)
    v = Verification(
        action_id=t.state.pending_action_id,
        tool="orders.get_order",
        verified=True,
        check="x",
        result=result,
    )
    nxt = on_verified(t.state, v)
    assert nxt is not None and nxt.escalation is not None
    assert "EUR 10.00" in nxt.escalation.summary


# Regression 6 (cli/main.py submit): only FileNotFoundError is caught, so a directory (or an unreadable
# file) crashes with a traceback and exit code 1 instead of a clean error and exit code 2.
def test_submit_a_directory_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["submit", str(tmp_path)])
    assert result.exit_code == 2
    assert not isinstance(result.exception, IsADirectoryError)
