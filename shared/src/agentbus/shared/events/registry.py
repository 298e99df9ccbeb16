"""Maps (type, version) to its event model, upcasts old versions at the edge, and decodes bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from .actions import ActionDecidedV1, ActionExecutedV1, ActionProposedV1, ActionVerifiedV1
from .control import ControlSwitchV1, DeadLetterRecordedV1
from .envelope import Event
from .legacy import EscalationRequestedV1, TaskClassifiedV1, TaskFinishedV1, to_v2
from .outcomes import ApprovalDecidedV1, EscalationRequestedV2, TaskFinishedV2
from .tickets import TaskClassifiedV2, TicketReceivedV1

EVENT_MODELS: tuple[type[Event], ...] = (
    TicketReceivedV1,
    TaskClassifiedV1,
    TaskClassifiedV2,
    ActionProposedV1,
    ActionDecidedV1,
    ActionExecutedV1,
    ActionVerifiedV1,
    TaskFinishedV1,
    TaskFinishedV2,
    EscalationRequestedV1,
    EscalationRequestedV2,
    ApprovalDecidedV1,
    ControlSwitchV1,
    DeadLetterRecordedV1,
)

REGISTRY: dict[tuple[str, int], type[Event]] = {(m.TYPE, m.VERSION): m for m in EVENT_MODELS}

# (type, old_version) -> function turning that version's dict into the next version's dict.
# A published version is never edited: an incompatible change is a new model plus an upcaster here.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("task.classified", 1): to_v2,
    ("escalation.requested", 1): to_v2,
    ("task.finished", 1): to_v2,
}


def latest_version(event_type: str) -> int:
    return max(v for (t, v) in REGISTRY if t == event_type)


class DecodeError(ValueError):
    """An event that cannot be read; `kind` says why, for the dead-letter record."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def decode(raw: bytes) -> Event:
    """Bytes → the latest model of that event type, upcasting older versions."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("malformed", f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise DecodeError("malformed", "an event must be a JSON object")
    # Postgres text and jsonb cannot hold NUL, and every event ends up in Postgres (audit store,
    # task and decision tables): refuse it here, once, rather than fail in each consumer's store.
    if b"\\u0000" in raw and contains_nul(obj):
        raise DecodeError("invalid", "a string contains NUL (\\u0000), which no agentbus store can keep")
    event_type, version = obj.get("type"), obj.get("version")
    # type() not isinstance(): JSON true is a bool, which Python counts as the int 1.
    if not isinstance(event_type, str) or type(version) is not int:
        raise DecodeError("invalid", "missing or mistyped envelope fields 'type'/'version'")
    if not any(t == event_type for t, _ in REGISTRY):
        raise DecodeError("unknown_type", f"unknown event type {event_type!r}")
    while (event_type, version) not in REGISTRY or version < latest_version(event_type):
        upcast = UPCASTERS.get((event_type, version))
        if upcast is None:
            raise DecodeError("unknown_type", f"no model or upcaster for {event_type!r} version {version}")
        obj = upcast(obj)
        version = obj["version"]
    try:
        return REGISTRY[(event_type, version)].model_validate(obj)
    except ValidationError as exc:
        raise DecodeError("invalid", _short(exc)) from exc


def contains_nul(value: Any) -> bool:
    """Whether any string (key or value) inside `value` holds the NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(v) for v in value)
    return False


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
