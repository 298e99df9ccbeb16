"""Rule-based intake: classify a ticket (intent, workflow, language, risk) and check eligibility."""

from __future__ import annotations

import re

from agentbus.shared.events import TaskClassified, TicketReceived

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


def detect_language(text: str) -> str:
    scores = {lang: len(rx.findall(text)) for lang, rx in LANGUAGE_MARKERS.items()}
    lang, score = max(scores.items(), key=lambda kv: kv[1])
    return lang if score >= 2 else "en"


def classify(ticket: TicketReceived) -> TaskClassified:
    text = f"{ticket.subject}\n{ticket.body}"
    reasons: list[str] = []
    order_id = ticket.order_id
    if order_id is None and (match := ORDER_ID.search(text)):
        order_id = match.group(0).upper()
        reasons.append("intake.order_id.from_text")

    if REFUND_WORDS.search(text):
        intent, workflow = "refund_request", "refunds"
        reasons.append("intake.intent.refund_keywords")
    else:
        intent, workflow = "question", None
        reasons.append("intake.intent.no_workflow_match")

    eligible = workflow is not None
    if workflow == "refunds" and order_id is None:
        eligible = False
        reasons.append("intake.refunds.missing_order_id")

    risk = "high" if HIGH_RISK_WORDS.search(text) else ("medium" if workflow else "low")
    if risk == "high":
        reasons.append("intake.risk.high_risk_words")

    return TaskClassified(
        intent=intent,
        workflow=workflow,
        language=detect_language(text),
        eligible=eligible,
        risk_tier=risk,
        reasons=reasons,
        customer_id=ticket.customer.id,
        order_id=order_id,
        subject=ticket.subject,
        channel=ticket.channel,
    )


def ineligibility_summary(ticket: TicketReceived, task: TaskClassified) -> str:
    if task.workflow is None:
        return (
            f"Ticket {ticket.ticket_id} ({task.intent}, {task.language}) matches no automated "
            f"workflow; a human should answer: {ticket.subject!r}."
        )
    return (
        f"Ticket {ticket.ticket_id} asks for a {task.workflow} action but cannot be handled "
        f"automatically ({', '.join(r for r in task.reasons if 'missing' in r)})."
    )
