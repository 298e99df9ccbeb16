"""`agentbus trace` rendering: one line per event, in order, with verdicts and rule ids."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import builders
from agentbus.shared.events import (
    ActionDecidedV1,
    ActionProposedV1,
    Decision,
    TaskClassifiedV2,
    TaskFinishedV2,
    TicketReceivedV1,
)
from agentbus.shared.serialization import dumps, loads
from agentbus.shared.timeline import describe, render

OFFSET = re.compile(r"\+\s*(\d+(?:\.\d+)?)ms")
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def chain() -> list[dict[str, Any]]:
    payloads = builders.payloads()
    decision = Decision(
        proposal=payloads[ActionProposedV1],
        verdict="needs_approval",
        rule_ids=["refund.needs_approval"],
        reason="A $40.00 refund needs approval",
    )
    models = [
        (TicketReceivedV1, None),
        (TaskClassifiedV2, None),
        (ActionProposedV1, None),
        (ActionDecidedV1, decision),
        (TaskFinishedV2, None),
    ]
    return [
        loads(
            dumps(
                builders.event(
                    m,
                    payload,
                    occurred_at=T0 + timedelta(milliseconds=250 * n),
                    step=n,
                    policy_version="sha256:abc",
                )
            )
        )
        for n, (m, payload) in enumerate(models)
    ]


def test_one_line_per_event_in_order() -> None:
    events = chain()
    lines = render("T-1", events, "resolved").splitlines()
    assert lines[0].startswith("ticket T-1")
    assert "status: resolved" in lines[0]
    assert "5 events" in lines[0]
    body, footer = lines[1:-1], lines[-1]
    assert footer == "cost: $0.000000 for 0 model calls, 0 tokens; prompts: none"
    assert len(body) == len(events)
    for n, (line, event) in enumerate(zip(body, events, strict=True), 1):
        assert line.strip().startswith(f"{n}.")
        assert event["type"] in line
        assert "tests" in line  # producer service
    offsets = [float(m.group(1)) for line in body if (m := OFFSET.search(line))]
    assert offsets == [0.0, 250.0, 500.0, 750.0, 1000.0]


def test_decided_line_has_upper_case_verdict_and_rules() -> None:
    line = render("T-1", chain(), "awaiting_approval").splitlines()[4]
    assert "action.decided" in line
    assert "NEEDS_APPROVAL" in line
    assert "rules=refund.needs_approval" in line
    assert "[policy sha256:abc]" in line


def test_descriptions_name_the_key_facts() -> None:
    received, classified, proposed, _, finished = chain()
    assert "order=ORD-1001" in describe(received)
    assert "C-1" in describe(received)
    assert "intent=refund_request" in describe(classified)
    assert "rules=intake.intent.refund_keywords" in describe(classified)
    assert "payments.issue_refund" in describe(proposed)
    assert '"amount_cents":2000' in describe(proposed)
    assert describe(finished).startswith("RESOLVED")


def test_no_events() -> None:
    assert render("T-404", [], "unknown") == "no events recorded for ticket T-404"


def test_classified_line_shows_facts_only_when_there_are_some() -> None:
    _, classified, *_ = chain()
    assert "facts=" not in describe(classified)
    with_facts = {**classified, "payload": {**classified["payload"], "facts": {"user_id": "U-100"}}}
    assert 'facts={"user_id":"U-100"}' in describe(with_facts)


def test_model_calls_show_per_step_and_sum_to_the_ticket_cost() -> None:
    events = chain()
    plan = {
        "purpose": "plan",
        "model": "large-1",
        "endpoint": "local",
        "route_reason": "planning",
        "prompt_version": "plan@0123456789ab",
        "sources": ["§3.1", "§3.2"],
        "reasks": 1,
        "usage": {
            "model_calls": 2,
            "prompt_tokens": 900,
            "completion_tokens": 100,
            "cost_microdollars": 1500,
        },
    }
    classify = {
        **plan,
        "purpose": "classify",
        "model": "small-1",
        "prompt_version": "classify@ba9876543210",
        "sources": [],
        "reasks": 0,
        "usage": {"model_calls": 1, "prompt_tokens": 300, "completion_tokens": 20, "cost_microdollars": 25},
    }
    for event in events:
        if event["type"] == "action.proposed":
            event["payload"]["context"]["model_calls"] = [plan]
        if event["type"] == "task.classified":
            event["payload"]["model_calls"] = [classify]
    text = render("T-1", events, "resolved")
    proposed = next(line for line in text.splitlines() if "action.proposed" in line)
    assert "[plan large-1 prompt=plan@0123456789ab sources=§3.1,§3.2 reasks=1 $0.001500]" in proposed
    assert text.splitlines()[-1] == (
        "cost: $0.001525 for 2 model calls, 1320 tokens; prompts: classify@ba9876543210, plan@0123456789ab"
    )


def test_each_step_shows_its_latency_since_the_event_it_answers() -> None:
    events = chain()
    for cause, event in itertools.pairwise(events):
        event["causation_id"] = cause["event_id"]
    events[-1]["occurred_at"] = (T0 + timedelta(milliseconds=1900)).isoformat()
    body = render("T-1", events, "resolved").splitlines()[1:-1]
    assert "(+" not in body[0]  # the request answers nothing recorded here
    assert [re.search(r"\(\+(\d+\.\d)\)", line).group(1) for line in body[1:]] == [  # type: ignore[union-attr]
        "250.0",
        "250.0",
        "250.0",
        "1150.0",
    ]


def test_an_allow_shows_its_capability_id_and_expiry() -> None:
    from agentbus.shared.capabilities import Signer
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    events = chain()
    decided = events[3]
    proposal = ActionProposedV1.model_validate(events[2]).payload
    token = Signer("k7", Ed25519PrivateKey.generate()).issue(proposal, "acme", now=T0.timestamp())
    decided["payload"] |= {"verdict": "allow", "capability": token}
    line = describe(decided)
    assert re.search(r"capability=k7/[0-9a-f-]{36} expires 03:09:05Z", line), line
    decided["payload"]["capability"] = "garbage"
    assert "capability=<malformed>" in describe(decided)
