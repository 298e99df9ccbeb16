"""Rule-based intake: classify a ticket (intent, workflow, language, risk) and check eligibility."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from agentbus.shared.events import TaskClassified, TicketReceived
from pydantic import JsonValue

if TYPE_CHECKING:  # the classifier loads the model client (openai): only with a models file
    from .classifier import ModelHint

ORDER_ID = re.compile(r"\bORD-\d{3,}\b", re.IGNORECASE)
REFUND_WORDS = re.compile(
    r"\b(refund|money back|reimburse|return(ed|ing)?|chargeback|erstattung|rembourse\w*|reembolso)\b",
    re.IGNORECASE,
)
LANGUAGE_MARKERS = {
    "de": re.compile(r"\b(und|bitte|bestellung|nicht|ich)\b", re.IGNORECASE),
    "fr": re.compile(r"\b(bonjour|commande|merci|je|remboursement)\b", re.IGNORECASE),
    "es": re.compile(r"\b(hola|pedido|gracias|reembolso|por favor)\b", re.IGNORECASE),
}
HIGH_RISK_WORDS = re.compile(r"\b(lawyer|legal|fraud|chargeback|police)\b", re.IGNORECASE)

# IT access requests (workflow it_access).
PASSWORD_RESET_WORDS = re.compile(
    r"\b(reset\s+(my\s+|the\s+)?password|password\s+reset|forgot(ten)?\s+(my\s+)?password|locked\s+out)\b",
    re.IGNORECASE,
)
GROUP_ID = re.compile(r"\bgrp-[a-z0-9]+(?:-[a-z0-9]+)*", re.IGNORECASE)
_GROUP_NAME = r"[a-z0-9][a-z0-9-]*(?:\s+[a-z0-9][a-z0-9-]*){0,2}"
GROUP_ACCESS_WORDS = re.compile(
    rf"\b(add\s+me\s+to|access\s+to\s+(the\s+)?grp-|access\s+to\s+the\s+{_GROUP_NAME}\s+group\b)",
    re.IGNORECASE,
)
# "the analytics group" → grp-analytics, when no grp-… id is written out.
GROUP_NAME = re.compile(rf"\b(?:to|join)\s+the\s+({_GROUP_NAME})\s+group\b", re.IGNORECASE)
# A directory user id as the helpdesk sends it in metadata.user_id (e.g. U-100).
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def detect_language(text: str) -> str:
    scores = {lang: len(rx.findall(text)) for lang, rx in LANGUAGE_MARKERS.items()}
    lang, score = max(scores.items(), key=lambda kv: kv[1])
    return lang if score >= 2 else "en"


# The workflow contract: which workflow serves which intent.
WORKFLOW_OF_INTENT: dict[str, str | None] = {
    "refund_request": "refunds",
    "password_reset": "it_access",
    "group_access": "it_access",
    "question": None,
}
RISK_ORDER = ("low", "medium", "high")


def classify(ticket: TicketReceived, hint: ModelHint | None = None) -> TaskClassified:
    """Intent, workflow, language and risk by rules, or by a model's `hint` where one is given;
    eligibility against the workflow contract is always checked by the rules."""
    text = f"{ticket.subject}\n{ticket.body}"
    reasons: list[str] = []
    order_id = ticket.order_id
    if order_id is None and (match := ORDER_ID.search(text)):
        order_id = match.group(0).upper()
        reasons.append("intake.order_id.from_text")

    access_intent = it_access_intent(text)
    facts: dict[str, JsonValue] = {}
    refund_words = REFUND_WORDS.search(text)
    # A refund request with an order id is the stronger signal ("return" alone is not).
    if refund_words and (order_id is not None or access_intent is None):
        intent, workflow = "refund_request", "refunds"
        reasons.append("intake.intent.refund_keywords")
    elif access_intent is not None:
        intent, workflow = access_intent, "it_access"
        reasons.append(f"intake.intent.{access_intent}_keywords")
    else:
        intent, workflow = "question", None
        reasons.append("intake.intent.no_workflow_match")
    if hint is not None and hint.intent != intent:
        intent, workflow = hint.intent, WORKFLOW_OF_INTENT[hint.intent]
        reasons.append(f"intake.intent.model_{hint.intent}")

    eligible = workflow is not None
    if workflow == "refunds" and order_id is None:
        eligible = False
        reasons.append("intake.refunds.missing_order_id")
    if workflow == "it_access":
        eligible = _it_access_facts(ticket, intent, text, facts, reasons)

    risk = "high" if HIGH_RISK_WORDS.search(text) else ("medium" if workflow else "low")
    if risk == "high":
        reasons.append("intake.risk.high_risk_words")
    if hint is not None and RISK_ORDER.index(hint.risk_tier) > RISK_ORDER.index(risk):
        # A model may raise the risk tier, never lower what the rules found.
        risk = hint.risk_tier
        reasons.append("intake.risk.model")

    return TaskClassified(
        intent=intent,
        workflow=workflow,
        language=hint.language if hint is not None else detect_language(text),
        eligible=eligible,
        risk_tier=risk,
        reasons=reasons,
        customer_id=ticket.customer.id,
        order_id=order_id,
        subject=ticket.subject,
        channel=ticket.channel,
        facts=facts,
    )


def it_access_intent(text: str) -> str | None:
    """'password_reset', 'group_access' or None. A password reset wins when both match: it
    changes no one's access, and the group request can follow in its own ticket."""
    if PASSWORD_RESET_WORDS.search(text):
        return "password_reset"
    if GROUP_ACCESS_WORDS.search(text):
        return "group_access"
    return None


def requesting_user(metadata: dict[str, Any]) -> str | None:
    """The directory user id the helpdesk authenticated (`metadata.user_id`). Never `customer.id`,
    which names a shop customer, and never an id written in the text, which anyone can type."""
    value = metadata.get("user_id")
    if isinstance(value, str) and USER_ID.fullmatch(value.strip()):
        return value.strip()
    return None


def requested_group(text: str) -> tuple[str | None, str | None]:
    """(group id, reason id): an explicit grp-… id, else one derived from "the X group"."""
    if match := GROUP_ID.search(text):
        return match.group(0).lower(), "intake.it_access.group_id.from_text"
    if match := GROUP_NAME.search(text):
        slug = "-".join(match.group(1).lower().split())
        return f"grp-{slug}", "intake.it_access.group_id.from_name"
    return None, None


def _it_access_facts(
    ticket: TicketReceived, intent: str, text: str, facts: dict[str, JsonValue], reasons: list[str]
) -> bool:
    """Fill `facts` (user_id, group_id) and say whether the request can go to the workflow."""
    eligible = True
    user_id = requesting_user(ticket.metadata)
    if user_id is None:
        eligible = False
        reasons.append("intake.it_access.missing_user_id")
    else:
        facts["user_id"] = user_id
    if intent == "group_access":
        group_id, found_by = requested_group(text)
        if group_id is None or found_by is None:
            eligible = False
            reasons.append("intake.it_access.missing_group_id")
        else:
            facts["group_id"] = group_id
            reasons.append(found_by)
    return eligible


def ineligibility_summary(ticket: TicketReceived, task: TaskClassified) -> str:
    if task.workflow is None:
        return (
            f"Ticket {ticket.ticket_id} ({task.intent}, {task.language}) matches no automated "
            f"workflow; a human should answer: {ticket.subject!r}."
        )
    missing = ", ".join(r for r in task.reasons if "missing" in r)
    if task.workflow == "it_access":
        what = "a password reset" if task.intent == "password_reset" else "group access"
        needs = []
        if "intake.it_access.missing_user_id" in task.reasons:
            needs.append("the requester's directory user id (metadata.user_id) is missing")
        if "intake.it_access.missing_group_id" in task.reasons:
            needs.append("no group is named (grp-… or 'the X group')")
        return (
            f"Ticket {ticket.ticket_id} asks for {what} but cannot be handled automatically: "
            f"{' and '.join(needs)} ({missing})."
        )
    return (
        f"Ticket {ticket.ticket_id} asks for a {task.workflow} action but cannot be handled "
        f"automatically ({missing})."
    )
