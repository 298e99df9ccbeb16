"""Readable one-line-per-step rendering of a ticket's events (for `agentbus trace`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson


def _args(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def describe(event: dict[str, Any]) -> str:
    p = event.get("payload") or {}
    kind = event["type"]
    if kind == "ticket.received":
        return f"{p['channel']} from {p['customer']['id']}: {p['subject']!r} order={p.get('order_id')}"
    if kind == "task.classified":
        facts = f" facts={_args(p['facts'])}" if p.get("facts") else ""
        return (
            f"intent={p['intent']} workflow={p['workflow']} eligible={p['eligible']} "
            f"risk={p['risk_tier']} lang={p['language']} rules={','.join(p['reasons'])}{facts}"
        )
    if kind == "action.proposed":
        return f"{p['action_id']} {p['tool']} {_args(p['args'])}"
    if kind == "action.decided":
        return (
            f"{p['proposal']['action_id']} {p['verdict'].upper()} rules={','.join(p['rule_ids'])} "
            f"— {p['reason']} [policy {event.get('policy_version')}]"
        )
    if kind == "action.executed":
        outcome = _args(p["result"]) if p["status"] == "succeeded" else p["error"]
        dup = " (duplicate: stored result)" if p.get("duplicate") else ""
        return f"{p['action_id']} {p['tool']} {p['status']}{dup} {outcome} in {p['duration_ms']}ms"
    if kind == "action.verified":
        ok = "OK" if p["verified"] else "FAILED"
        return f"{p['action_id']} {p['check']} {ok} {_args(p['evidence'])}"
    if kind == "escalation.requested":
        return f"{p['reason']}: {p['summary']}"
    if kind == "approval.decided":
        return f"{p['approval_id']} approved={p['approved']} by {p['approver']} ({p['role']})"
    if kind == "task.finished":
        handoff = f" handoff={p['handoff_id']}" if p.get("handoff_id") else ""
        return f"{p['outcome'].upper()}{handoff}: {p['summary']}"
    if kind == "deadletter.recorded":
        return f"{p['error_type']} from {p['source_topic']}@{p['partition']}:{p['offset']}: {p['reason']}"
    return _args(p)


def render(ticket_id: str, events: list[dict[str, Any]], status: str) -> str:
    if not events:
        return f"no events recorded for ticket {ticket_id}"
    start = datetime.fromisoformat(events[0]["occurred_at"].replace("Z", "+00:00"))
    lines = [f"ticket {ticket_id} — status: {status} — {len(events)} events"]
    for n, event in enumerate(events, 1):
        at = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
        offset_ms = (at - start).total_seconds() * 1000
        producer = event["producer"]["service"]
        at_text = f"+{offset_ms:.1f}ms"
        lines.append(f"{n:>3}. {at_text:>11}  {event['type']:<21} {producer:<17} {describe(event)}")
    return "\n".join(lines)
