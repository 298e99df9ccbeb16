"""A ticket's events as a timeline: one readable line per step (`agentbus trace`) or rows (the console)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from .capabilities import read_claims


def _args(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def usd(microdollars: int) -> str:
    return f"${microdollars / 1_000_000:.6f}"


def model_use(calls: list[dict[str, Any]]) -> str:
    """` [plan gpt-x prompt=plan@… sources=§3.1,§3.2 reasks=1 $0.000120]` per model call."""
    parts = []
    for c in calls:
        sources = f" sources={','.join(c['sources'])}" if c.get("sources") else ""
        reasks = f" reasks={c['reasks']}" if c.get("reasks") else ""
        parts.append(
            f" [{c['purpose']} {c['model']} prompt={c['prompt_version']}{sources}{reasks} "
            f"{usd(c['usage']['cost_microdollars'])}]"
        )
    return "".join(parts)


def model_calls_of(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The model calls that shaped this event (classification, or a proposal's planning step)."""
    p = event.get("payload") or {}
    if event["type"] == "task.classified":
        return list(p.get("model_calls") or [])
    if event["type"] == "action.proposed":
        return list((p.get("context") or {}).get("model_calls") or [])
    return []


def cost_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Cost per ticket, summed from the per-step records (the authoritative figures)."""
    seen: set[str] = set()
    calls = []
    for event in events:
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        calls.extend(model_calls_of(event))
    return {
        "model_calls": len(calls),
        "tokens": sum(c["usage"]["prompt_tokens"] + c["usage"]["completion_tokens"] for c in calls),
        "cost_microdollars": sum(c["usage"]["cost_microdollars"] for c in calls),
        "prompt_versions": sorted({c["prompt_version"] for c in calls}),
        "models": sorted({c["model"] for c in calls}),
    }


def capability(token: str | None) -> str:
    """` capability=<kid>/<jti> expires <time>` for an allow (claims shown, signature not checked)."""
    if not token:
        return ""
    claims = read_claims(token)
    if claims is None:
        return " capability=<malformed>"
    expires = datetime.fromtimestamp(claims.expires_at, UTC).strftime("%H:%M:%SZ")
    return f" capability={claims.kid}/{claims.jti} expires {expires}"


def step_latency_ms(events: list[dict[str, Any]]) -> dict[str, float]:
    """Per event id: milliseconds since the event it answers (its cause), where the cause is known."""
    at = {e["event_id"]: _time(e) for e in events}
    return {
        e["event_id"]: (_time(e) - at[e["causation_id"]]).total_seconds() * 1000
        for e in events
        if e.get("causation_id") in at
    }


def _time(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))


def describe(event: dict[str, Any]) -> str:
    p = event.get("payload") or {}
    kind = event["type"]
    if kind == "ticket.received":
        return f"{p['channel']} from {p['customer']['id']}: {p['subject']!r} order={p.get('order_id')}"
    if kind == "task.classified":
        facts = f" facts={_args(p['facts'])}" if p.get("facts") else ""
        pii = f" pii={len(p['pii'])}" if p.get("pii") else ""
        return (
            f"intent={p['intent']} workflow={p['workflow']} eligible={p['eligible']} "
            f"risk={p['risk_tier']} lang={p['language']} rules={','.join(p['reasons'])}{facts}{pii}"
            f"{model_use(model_calls_of(event))}"
        )
    if kind == "action.proposed":
        return f"{p['action_id']} {p['tool']} {_args(p['args'])}{model_use(model_calls_of(event))}"
    if kind == "action.decided":
        return (
            f"{p['proposal']['action_id']} {p['verdict'].upper()} rules={','.join(p['rule_ids'])} "
            f"— {p['reason']} [policy {event.get('policy_version')}]{capability(p.get('capability'))}"
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
    start = _time(events[0])
    cost = cost_summary(events)
    latency = step_latency_ms(events)
    lines = [f"ticket {ticket_id} — status: {status} — {len(events)} events"]
    for n, event in enumerate(events, 1):
        offset_ms = (_time(event) - start).total_seconds() * 1000
        producer = event["producer"]["service"]
        at_text = f"+{offset_ms:.1f}ms"
        step = latency.get(event["event_id"])
        step_text = f"(+{step:.1f})" if step is not None else ""
        lines.append(
            f"{n:>3}. {at_text:>11} {step_text:>10}  {event['type']:<21} {producer:<17} {describe(event)}"
        )
    prompts = ", ".join(cost["prompt_versions"]) or "none"
    lines.append(
        f"cost: {usd(cost['cost_microdollars'])} for {cost['model_calls']} model calls, "
        f"{cost['tokens']} tokens; prompts: {prompts}"
    )
    return "\n".join(lines)


def steps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per event for a UI: when, how long since its cause, and the decision, capability,
    result and cost of the step as fields (plus the same one-line summary `agentbus trace` prints)."""
    if not events:
        return []
    start = _time(events[0])
    latency = step_latency_ms(events)
    rows = []
    for n, event in enumerate(events, 1):
        p = event.get("payload") or {}
        calls = model_calls_of(event)
        row: dict[str, Any] = {
            "n": n,
            "event_id": event["event_id"],
            "type": event["type"],
            "at": event["occurred_at"],
            "offset_ms": round((_time(event) - start).total_seconds() * 1000, 1),
            "latency_ms": round(latency[event["event_id"]], 1) if event["event_id"] in latency else None,
            "producer": event["producer"]["service"],
            "summary": describe(event),
            "cost_microdollars": sum(c["usage"]["cost_microdollars"] for c in calls),
        }
        kind = event["type"]
        if kind == "action.decided":
            row.update(
                tool=p["proposal"]["tool"],
                verdict=p["verdict"],
                rule_ids=p["rule_ids"],
                reason=p["reason"],
                policy_version=event.get("policy_version"),
                capability=capability(p.get("capability")).strip() or None,
            )
        elif kind in ("action.proposed", "action.executed", "action.verified"):
            row["tool"] = p.get("tool")
        if kind == "action.executed":
            row.update(status=p["status"], result=p.get("result"), error=p.get("error"))
        elif kind == "action.verified":
            row.update(status="verified" if p["verified"] else "failed")
        elif kind == "task.finished":
            row.update(status=p["outcome"])
        rows.append(row)
    return rows
