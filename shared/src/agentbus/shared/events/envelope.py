"""The envelope every agentbus event carries, and the base class for typed events."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from opentelemetry import propagate
from pydantic import BaseModel, ConfigDict, Field
from uuid6 import uuid7


def new_event_id() -> str:
    return str(uuid7())


def utcnow() -> datetime:
    return datetime.now(UTC)


E = TypeVar("E", bound="Event")


class Model(BaseModel):
    """Strict, immutable base for everything on the wire: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Producer(Model):
    service: str
    version: str
    instance: str


class Event(Model):
    """Envelope fields; subclasses pin `type` and `version` and declare a typed `payload`."""

    TYPE: ClassVar[str]
    VERSION: ClassVar[int]

    event_id: str = Field(default_factory=new_event_id, description="UUIDv7")
    type: str
    version: int
    occurred_at: datetime = Field(default_factory=utcnow)
    ticket_id: str | None = None
    tenant_id: str | None = None
    causation_id: str | None = Field(default=None, description="event_id this event answers")
    step: int = 0
    producer: Producer
    traceparent: str | None = None
    policy_version: str | None = None
    prompt_version: str | None = None
    model: str | None = None
    payload: Any

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        fields = cls.model_fields
        type_default = fields["type"].default
        version_default = fields["version"].default
        if isinstance(type_default, str) and isinstance(version_default, int):
            cls.TYPE = type_default
            cls.VERSION = version_default

    def answer(self, event_cls: builtins.type[E], payload: Any, producer: Producer, **envelope: Any) -> E:
        """Build the next event of this ticket, caused by this one. Its trace context is the span
        building it (a handler's), else this event's: the ticket's trace either way."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        fields: dict[str, Any] = {
            "ticket_id": self.ticket_id,
            "tenant_id": self.tenant_id,
            "causation_id": self.event_id,
            "step": self.step + 1,
            "traceparent": carrier.get("traceparent") or self.traceparent,
            "policy_version": self.policy_version,
            "prompt_version": self.prompt_version,
            "model": self.model,
        }
        fields.update(envelope)
        return event_cls(payload=payload, producer=producer, **fields)
