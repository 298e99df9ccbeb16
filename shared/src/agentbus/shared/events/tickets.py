"""Upstream ticket event (tickets.received) and the intake's classification (tasks.classified)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from .envelope import Event, Model
from .usage import ModelCall, PiiRef, Usage


class Customer(Model):
    id: str = Field(min_length=1)
    email: str = Field(min_length=3)


class TicketReceived(Model):
    ticket_id: str = Field(min_length=1, max_length=128)
    tenant_id: str = Field(min_length=1, max_length=128)
    channel: Literal["email", "chat", "web", "phone", "api"]
    customer: Customer
    subject: str = Field(max_length=1_000)
    body: str = Field(max_length=50_000)
    order_id: str | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class TicketReceivedV1(Event):
    type: Literal["ticket.received"] = "ticket.received"
    version: Literal[1] = 1
    payload: TicketReceived


RiskTier = Literal["low", "medium", "high"]


class TaskClassified(Model):
    """Version 2 adds the PII-protected ticket text and the model use of intake."""

    intent: str
    workflow: str | None = Field(description="workflow that will handle the task; None = none fits")
    language: str
    eligible: bool
    risk_tier: RiskTier
    reasons: list[str] = Field(description="ids of the intake rules that fired")
    customer_id: str
    order_id: str | None = None
    subject: str = Field(description="ticket subject, PII replaced by tokens")
    channel: str
    facts: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="workflow-specific facts intake found, e.g. user_id and group_id for it_access",
    )
    body: str = Field(default="", description="ticket body, PII replaced by tokens; untrusted text")
    pii: list[PiiRef] = Field(default_factory=list, description="tokens that replaced PII in this ticket")
    model_calls: list[ModelCall] = Field(default_factory=list, description="empty: rules alone decided")
    usage: Usage = Field(default_factory=Usage)


class TaskClassifiedV2(Event):
    type: Literal["task.classified"] = "task.classified"
    version: Literal[2] = 2
    payload: TaskClassified
