"""Answers fixed by their cause: a stage that handles a redelivered event sends the same event again.

Redeliveries are normal: rebalances, restarts, a re-drive from the audit store, the reconciler. A
stage without its own record of what it answered (intake, executor, verifier, escalation) would send a
new event each time: a second row in the audit store, and a second task.finished for the ticket. With
the id derived from the cause, the answer to a redelivery is the event the store and every consumer
already hold, and they ignore it.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from .events import Event, Producer

E = TypeVar("E", bound=Event)

# Fixed namespace for answer ids (any constant works; it only has to stay the same).
NAMESPACE = uuid.UUID("6f1d7a52-3c1e-4d0b-9a57-2f0e4c1b8d21")


def answer_id(cause: Event, service: str, answer_type: str) -> str:
    """The event id of what `service` sends of `answer_type` in answer to `cause`."""
    return str(uuid.uuid5(NAMESPACE, f"{cause.event_id}/{service}/{answer_type}"))


def answer(cause: Event, event_cls: type[E], payload: Any, producer: Producer, **envelope: Any) -> E:
    """`cause.answer(…)` with the event id fixed by the cause and the answering service."""
    event_id = answer_id(cause, producer.service, event_cls.TYPE)
    return cause.answer(event_cls, payload, producer, event_id=event_id, **envelope)
