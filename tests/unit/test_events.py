"""Event envelope: serialization round-trip, decode errors, upcasters, immutability, answer()."""

from __future__ import annotations

from typing import Any

import builders
import orjson
import pydantic
import pytest
from agentbus.shared.events import (
    EVENT_MODELS,
    REGISTRY,
    UPCASTERS,
    DecodeError,
    Event,
    Producer,
    TaskClassifiedV2,
    TicketReceivedV1,
    decode,
)
from agentbus.shared.events import registry as registry_module
from agentbus.shared.events.registry import latest_version
from agentbus.shared.serialization import dumps, loads


def wire(model: type[Event] = TicketReceivedV1) -> dict[str, Any]:
    return loads(dumps(builders.event(model)))


def decode_error(obj: Any) -> DecodeError:
    raw = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    with pytest.raises(DecodeError) as info:
        decode(raw)
    return info.value


def test_builders_cover_every_model() -> None:
    assert set(builders.payloads()) == set(EVENT_MODELS)
    assert set(REGISTRY.values()) == set(EVENT_MODELS)


CURRENT = [m for m in EVENT_MODELS if latest_version(m.TYPE) == m.VERSION]
SUPERSEDED = [m for m in EVENT_MODELS if m not in CURRENT]


def test_three_event_types_have_a_superseded_version() -> None:
    assert sorted((m.TYPE, m.VERSION) for m in SUPERSEDED) == [
        ("escalation.requested", 1),
        ("task.classified", 1),
        ("task.finished", 1),
    ]


@pytest.mark.parametrize("model", CURRENT, ids=lambda m: m.TYPE)
def test_round_trip(model: type[Event]) -> None:
    event = builders.event(model, causation_id="01-cause", step=3, policy_version="sha256:ab")
    raw = dumps(event)
    back = decode(raw)
    assert type(back) is model
    assert back == event
    assert dumps(back) == raw
    obj = loads(raw)
    assert obj["type"] == model.TYPE
    assert obj["version"] == model.VERSION


@pytest.mark.parametrize("model", SUPERSEDED, ids=lambda m: m.TYPE)
def test_superseded_version_is_upcast_to_the_current_one(model: type[Event]) -> None:
    old = builders.event(model, step=3)
    back = decode(dumps(old))
    assert back.version == latest_version(model.TYPE) == model.VERSION + 1
    assert back.event_id == old.event_id and back.step == 3
    # v2 only adds fields: every v1 payload field survives with its value.
    new_payload = back.payload.model_dump(mode="json")
    for key, value in old.payload.model_dump(mode="json").items():
        assert new_payload[key] == value


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: f"{m.TYPE}.v{m.VERSION}")
def test_type_and_version_are_pinned(model: type[Event]) -> None:
    event = builders.event(model)
    assert event.type == model.TYPE
    assert event.version == model.VERSION
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({**event.model_dump(), "version": model.VERSION + 1})


def test_extra_envelope_field_is_invalid() -> None:
    obj = wire()
    obj["surprise"] = 1
    err = decode_error(obj)
    assert err.kind == "invalid"
    assert "surprise" in str(err)


def test_extra_payload_field_is_invalid() -> None:
    obj = wire()
    obj["payload"]["priority"] = "high"
    err = decode_error(obj)
    assert err.kind == "invalid"
    assert "payload.priority" in str(err)


def test_missing_payload_field_is_invalid() -> None:
    obj = wire()
    del obj["payload"]["customer"]
    assert decode_error(obj).kind == "invalid"


def test_wrong_payload_for_type_is_invalid() -> None:
    obj = wire()
    obj["payload"] = "oops"
    assert decode_error(obj).kind == "invalid"


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"type": "ticket.received", "version": 1, "payload": "oops"', b""],
)
def test_not_json_is_malformed(raw: bytes) -> None:
    assert decode_error(raw).kind == "malformed"


@pytest.mark.parametrize("obj", [[wire()], "ticket.received", 1, None])
def test_non_object_json_is_malformed(obj: Any) -> None:
    assert decode_error(obj).kind == "malformed"


@pytest.mark.parametrize(
    "envelope",
    [
        {"version": 1},
        {"type": "ticket.received"},
        {"type": 5, "version": 1},
        {"type": "ticket.received", "version": "1"},
    ],
)
def test_missing_type_or_version_is_invalid(envelope: dict[str, Any]) -> None:
    assert decode_error(envelope).kind == "invalid"


def test_unknown_type() -> None:
    obj = wire()
    obj["type"] = "ticket.teleported"
    err = decode_error(obj)
    assert err.kind == "unknown_type"
    assert "ticket.teleported" in str(err)


def test_newer_version_without_model_or_upcaster_is_unknown_type() -> None:
    obj = wire()
    obj["version"] = 2
    err = decode_error(obj)
    assert err.kind == "unknown_type"
    assert "version 2" in str(err)


def test_old_version_without_upcaster_is_unknown_type() -> None:
    obj = wire()
    obj["version"] = 0
    assert decode_error(obj).kind == "unknown_type"


def test_upcaster_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def v0_to_v1(old: dict[str, Any]) -> dict[str, Any]:
        calls.append(old)
        new = dict(old)
        payload = dict(new["payload"])
        payload["body"] = payload.pop("text")
        new["payload"] = payload
        new["version"] = 1
        return new

    monkeypatch.setitem(UPCASTERS, ("ticket.received", 0), v0_to_v1)
    obj = wire()
    obj["version"] = 0
    obj["payload"]["text"] = obj["payload"].pop("body")
    event = decode(orjson.dumps(obj))
    assert len(calls) == 1
    assert isinstance(event, TicketReceivedV1)
    assert event.version == 1
    assert event.payload.body == "Hello, the item is not what I wanted. Please refund me."


def test_upcasters_chain_through_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def bump(old: dict[str, Any]) -> dict[str, Any]:
        seen.append(old["version"])
        return {**old, "version": old["version"] + 1}

    monkeypatch.setitem(UPCASTERS, ("ticket.received", -1), bump)
    monkeypatch.setitem(UPCASTERS, ("ticket.received", 0), bump)
    obj = wire()
    obj["version"] = -1
    assert isinstance(decode(orjson.dumps(obj)), TicketReceivedV1)
    assert seen == [-1, 0]


def test_upcasted_event_that_does_not_validate_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(UPCASTERS, ("ticket.received", 0), lambda old: {**old, "version": 1})
    obj = wire()
    obj["version"] = 0
    obj["payload"]["text"] = obj["payload"].pop("body")
    assert decode_error(obj).kind == "invalid"


def test_latest_version() -> None:
    assert registry_module.latest_version("ticket.received") == 1


def test_models_are_frozen() -> None:
    event = builders.event(TicketReceivedV1)
    with pytest.raises(pydantic.ValidationError):
        event.ticket_id = "T-2"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        event.payload.subject = "changed"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        builders.PRODUCER.service = "other"  # type: ignore[misc]


def test_models_reject_unknown_fields_on_construction() -> None:
    with pytest.raises(pydantic.ValidationError):
        Producer(service="s", version="1", instance="i", host="h")  # type: ignore[call-arg]


def test_event_ids_are_unique_uuid7() -> None:
    a, b = builders.event(TicketReceivedV1), builders.event(TicketReceivedV1)
    assert a.event_id != b.event_id
    assert a.event_id[14] == "7"  # UUID version nibble


def test_answer_links_the_next_event(producer: Producer) -> None:
    cause = builders.event(TicketReceivedV1, step=2, traceparent="00-abc-def-01", policy_version="sha256:1")
    other = Producer(service="intake", version="0.1.0", instance="intake-1")
    nxt = cause.answer(TaskClassifiedV2, builders.payloads()[TaskClassifiedV2], other)
    assert isinstance(nxt, TaskClassifiedV2)
    assert nxt.ticket_id == cause.ticket_id == "T-1"
    assert nxt.tenant_id == cause.tenant_id == "acme"
    assert nxt.causation_id == cause.event_id
    assert nxt.step == 3
    assert nxt.traceparent == "00-abc-def-01"
    assert nxt.policy_version == "sha256:1"
    assert nxt.producer == other
    assert nxt.event_id != cause.event_id


def test_answer_envelope_overrides(producer: Producer) -> None:
    cause = builders.event(TicketReceivedV1)
    nxt = cause.answer(TaskClassifiedV2, builders.payloads()[TaskClassifiedV2], producer, policy_version="v2")
    assert nxt.policy_version == "v2"
    assert nxt.causation_id == cause.event_id


@pytest.mark.parametrize("where", ["payload.body", "payload.metadata.key"])
def test_a_nul_character_is_invalid_because_no_store_can_keep_it(where: str) -> None:
    obj = wire()
    if where == "payload.body":
        obj["payload"]["body"] = "refund\x00me"
    else:
        obj["payload"]["metadata"] = {"k\x00": "v"}
    err = decode_error(obj)
    assert err.kind == "invalid" and "NUL" in str(err)


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    obj = wire()
    obj["payload"]["body"] = "path C:\\u0000"  # a backslash, then the text u0000
    assert decode(orjson.dumps(obj)).payload.body == "path C:\\u0000"
