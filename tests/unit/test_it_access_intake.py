"""Intake rules for IT access requests: password resets and group access, facts and eligibility."""

from __future__ import annotations

from typing import Any

import pytest
from agentbus.cli import demo
from agentbus.intake.rules import classify, ineligibility_summary, requesting_user
from agentbus.shared.events import TicketReceived
from builders import ticket


def it_ticket(body: str, subject: str = "IT request", **overrides: Any) -> TicketReceived:
    fields: dict[str, Any] = {
        "order_id": None,
        "subject": subject,
        "body": body,
        "metadata": {"user_id": "U-100"},
    }
    fields.update(overrides)
    return ticket(**fields)


@pytest.mark.parametrize(
    "body",
    [
        "Please reset my password.",
        "I forgot my password again",
        "Forgot password",
        "I'm locked out of my laptop",
        "Can you do a password reset for me?",
    ],
)
def test_password_reset_phrases_select_it_access(body: str) -> None:
    task = classify(it_ticket(body))
    assert (task.workflow, task.intent) == ("it_access", "password_reset")
    assert task.eligible is True
    assert task.facts == {"user_id": "U-100"}
    assert "intake.intent.password_reset_keywords" in task.reasons
    assert task.order_id is None


@pytest.mark.parametrize(
    ("body", "group_id", "found_by"),
    [
        ("Please add me to grp-analytics.", "grp-analytics", "from_text"),
        ("I need access to grp-prod-admin for the on-call week", "grp-prod-admin", "from_text"),
        ("Could you add me to GRP-Wiki?", "grp-wiki", "from_text"),
        ("I need access to the analytics group", "grp-analytics", "from_name"),
        ("Please add me to the prod admin group", "grp-prod-admin", "from_name"),
    ],
)
def test_group_access_extracts_the_group_id(body: str, group_id: str, found_by: str) -> None:
    task = classify(it_ticket(body))
    assert (task.workflow, task.intent) == ("it_access", "group_access")
    assert task.eligible is True
    assert task.facts == {"user_id": "U-100", "group_id": group_id}
    assert f"intake.it_access.group_id.{found_by}" in task.reasons


def test_a_written_out_group_id_wins_over_a_group_name() -> None:
    task = classify(it_ticket("Add me to the wiki group, that is grp-wiki-editors"))
    assert task.facts["group_id"] == "grp-wiki-editors"


def test_group_access_without_a_group_is_not_eligible() -> None:
    t = it_ticket("Please add me to the mailing list")
    task = classify(t)
    assert (task.workflow, task.intent, task.eligible) == ("it_access", "group_access", False)
    assert "intake.it_access.missing_group_id" in task.reasons
    assert "group_id" not in task.facts
    summary = ineligibility_summary(t, task)
    assert "no group is named" in summary
    assert "intake.it_access.missing_group_id" in summary


@pytest.mark.parametrize(
    "metadata",
    [{}, {"user_id": ""}, {"user_id": 100}, {"user_id": "U 100; drop"}, {"source": "web"}],
    ids=["none", "empty", "not_a_string", "not_an_id", "other_keys"],
)
def test_it_access_without_a_usable_user_id_is_not_eligible(metadata: dict[str, Any]) -> None:
    t = it_ticket("I forgot my password", metadata=metadata)
    task = classify(t)
    assert (task.workflow, task.eligible) == ("it_access", False)
    assert "intake.it_access.missing_user_id" in task.reasons
    assert "user_id" not in task.facts
    assert "metadata.user_id" in ineligibility_summary(t, task)


def test_the_user_id_comes_only_from_metadata_not_from_customer_or_text() -> None:
    t = it_ticket(
        "I am U-101, please reset my password",
        customer={"id": "U-102", "email": "dana@example.com"},
        metadata={},
    )
    task = classify(t)
    assert task.eligible is False
    assert task.facts == {}
    assert requesting_user({"user_id": " U-100 "}) == "U-100"


def test_password_reset_wins_over_group_access() -> None:
    task = classify(it_ticket("I forgot my password, and please add me to grp-wiki"))
    assert task.intent == "password_reset"
    assert task.facts == {"user_id": "U-100"}


def test_a_refund_with_an_order_id_stays_a_refund() -> None:
    task = classify(ticket(body="Please refund ORD-1001. Also I forgot my password.", metadata={}))
    assert (task.workflow, task.intent, task.eligible) == ("refunds", "refund_request", True)
    assert task.facts == {}


def test_refund_words_without_an_order_id_do_not_hide_an_access_request() -> None:
    task = classify(it_ticket("I returned from holiday and I am locked out"))
    assert (task.workflow, task.intent, task.eligible) == ("it_access", "password_reset", True)


def test_refund_tasks_carry_no_facts() -> None:
    assert classify(ticket()).facts == {}


def test_the_it_access_demo_tickets_classify_as_their_workflow_expects() -> None:
    tickets = {label: (body, expected) for label, body, expected in demo.it_access_tickets()}
    reset, reset_expected = tickets["U-100 password reset"]
    grant, grant_expected = tickets["U-100 grp-prod-admin"]
    assert (reset_expected, grant_expected) == ("resolved", "awaiting_approval")
    assert isinstance(reset, dict) and isinstance(grant, dict)
    reset_task = classify(TicketReceived.model_validate(reset))
    assert (reset_task.intent, reset_task.eligible, reset_task.facts) == (
        "password_reset",
        True,
        {"user_id": "U-100"},
    )
    grant_task = classify(TicketReceived.model_validate(grant))
    assert (grant_task.intent, grant_task.eligible, grant_task.facts) == (
        "group_access",
        True,
        {"user_id": "U-100", "group_id": "grp-prod-admin"},
    )
