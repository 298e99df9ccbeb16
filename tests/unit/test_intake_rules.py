"""Intake rules: intent, workflow, eligibility, order id extraction, risk and language."""

from __future__ import annotations

import pytest
from agentbus.intake.rules import classify, detect_language, ineligibility_summary
from builders import ticket


def test_refund_with_order_id_is_an_eligible_refund_request() -> None:
    task = classify(ticket())
    assert task.intent == "refund_request"
    assert task.workflow == "refunds"
    assert task.eligible is True
    assert task.order_id == "ORD-1001"
    assert task.customer_id == "C-1"
    assert task.channel == "email"
    assert task.risk_tier == "medium"
    assert "intake.intent.refund_keywords" in task.reasons
    assert "intake.order_id.from_text" not in task.reasons


def test_order_id_only_in_text_is_extracted() -> None:
    task = classify(
        ticket(order_id=None, subject="Wrong size", body="Please refund my order ord-1002, thanks.")
    )
    assert task.order_id == "ORD-1002"
    assert "intake.order_id.from_text" in task.reasons
    assert task.eligible is True
    assert task.workflow == "refunds"


def test_explicit_order_id_wins_over_text() -> None:
    task = classify(ticket(order_id="ORD-2000", body="refund ORD-1002 please"))
    assert task.order_id == "ORD-2000"
    assert "intake.order_id.from_text" not in task.reasons


def test_refund_words_without_order_id_are_not_eligible() -> None:
    t = ticket(order_id=None, subject="Money", body="I want my money back now.")
    task = classify(t)
    assert task.intent == "refund_request"
    assert task.workflow == "refunds"
    assert task.order_id is None
    assert task.eligible is False
    assert "intake.refunds.missing_order_id" in task.reasons
    assert "intake.refunds.missing_order_id" in ineligibility_summary(t, task)


def test_plain_question_has_no_workflow() -> None:
    t = ticket(order_id=None, subject="Opening hours", body="What are your hours on weekends?")
    task = classify(t)
    assert task.intent == "question"
    assert task.workflow is None
    assert task.eligible is False
    assert task.risk_tier == "low"
    assert task.reasons == ["intake.intent.no_workflow_match"]
    assert "matches no automated workflow" in ineligibility_summary(t, task)


@pytest.mark.parametrize("word", ["lawyer", "fraud", "police", "chargeback", "LEGAL"])
def test_high_risk_words_raise_the_risk_tier(word: str) -> None:
    task = classify(ticket(body=f"Refund me or I will involve {word}."))
    assert task.risk_tier == "high"
    assert "intake.risk.high_risk_words" in task.reasons


def test_high_risk_question_is_still_high_risk() -> None:
    task = classify(ticket(order_id=None, subject="Hours", body="My lawyer asks for your hours."))
    assert task.workflow is None
    assert task.risk_tier == "high"


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Hallo, ich möchte bitte eine Erstattung für meine Bestellung.", "de"),
        ("Bonjour, je voudrais un remboursement pour ma commande, merci.", "fr"),
        ("Hola, quiero un reembolso de mi pedido, gracias.", "es"),
        ("Hello, I would like a refund for my order please.", "en"),
        ("", "en"),
    ],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


def test_a_single_marker_word_is_not_enough() -> None:
    assert detect_language("Thanks, merci for the quick reply about the order.") == "en"


def test_classify_sets_the_language_from_subject_and_body() -> None:
    task = classify(
        ticket(subject="Bestellung ORD-1001", body="Ich bitte um Erstattung, die Ware ist kaputt.")
    )
    assert task.language == "de"
    assert task.workflow == "refunds"
