"""Committed JSON Schemas in schemas/ match the event models and validate real events."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from agentbus.shared.events import EVENT_MODELS, Event
from agentbus.shared.events.schemas import drift, generate, write
from agentbus.shared.serialization import dumps, loads


def schema_of(schemas_dir: Path, model: type[Event]) -> dict[str, Any]:
    return json.loads((schemas_dir / model.TYPE / f"v{model.VERSION}.json").read_text())


@pytest.fixture
def copy(schemas_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(schemas_dir, root)
    assert drift(root) == []
    return root


def test_committed_schemas_match_the_models(schemas_dir: Path) -> None:
    assert drift(schemas_dir) == [], "schemas/ is stale: run `agentbus schemas --write`"


def test_generate_is_stable() -> None:
    assert generate() == generate()


def test_drift_detects_a_changed_file(copy: Path) -> None:
    path = copy / "ticket.received" / "v1.json"
    schema = json.loads(path.read_text())
    schema["properties"]["priority"] = {"type": "string"}
    path.write_text(json.dumps(schema, indent=2))
    assert drift(copy) == ["ticket.received/v1.json: differs from the model"]


def test_drift_detects_a_whitespace_only_change(copy: Path) -> None:
    path = copy / "task.finished" / "v1.json"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert drift(copy) == ["task.finished/v1.json: differs from the model"]


def test_drift_detects_a_missing_file(copy: Path) -> None:
    (copy / "action.verified" / "v1.json").unlink()
    problems = drift(copy)
    assert len(problems) == 1
    assert problems[0].startswith("action.verified/v1.json: missing")


def test_drift_detects_an_unknown_file(copy: Path) -> None:
    extra = copy / "ticket.received" / "v2.json"
    extra.write_text("{}")
    assert drift(copy) == ["ticket.received/v2.json: no model produces it"]


def test_write_repairs_drift(copy: Path) -> None:
    (copy / "action.verified" / "v1.json").unlink()
    (copy / "task.finished" / "v1.json").write_text("{}")
    assert sorted(write(copy)) == ["action.verified/v1.json", "task.finished/v1.json"]
    assert drift(copy) == []
    assert write(copy) == []


def test_every_model_has_a_schema_file(schemas_dir: Path) -> None:
    for model in EVENT_MODELS:
        path = schemas_dir / model.TYPE / f"v{model.VERSION}.json"
        assert path.is_file(), f"no schema for {model.TYPE} v{model.VERSION}"
        schema = json.loads(path.read_text())
        assert schema["x-topic-event"] == {"type": model.TYPE, "version": model.VERSION}
        assert schema["$id"].endswith(f"/{model.TYPE}/v{model.VERSION}.json")
    files = {p.relative_to(schemas_dir).as_posix() for p in schemas_dir.rglob("*.json")}
    assert files == {f"{m.TYPE}/v{m.VERSION}.json" for m in EVENT_MODELS}


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.TYPE)
def test_schema_is_valid_draft_2020_12(schemas_dir: Path, model: type[Event]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema_of(schemas_dir, model))


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.TYPE)
def test_schema_accepts_a_real_event(schemas_dir: Path, builders: ModuleType, model: type[Event]) -> None:
    validator = jsonschema.Draft202012Validator(schema_of(schemas_dir, model))
    instance = loads(dumps(builders.event(model)))
    errors = [e.message for e in validator.iter_errors(instance)]
    assert errors == []


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.TYPE)
def test_schema_rejects_extra_fields(schemas_dir: Path, builders: ModuleType, model: type[Event]) -> None:
    validator = jsonschema.Draft202012Validator(schema_of(schemas_dir, model))
    instance = loads(dumps(builders.event(model)))
    assert not validator.is_valid({**instance, "unexpected": 1})
    assert not validator.is_valid({**instance, "payload": {**instance["payload"], "unexpected": 1}})


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.TYPE)
def test_schema_pins_type_and_version(schemas_dir: Path, builders: ModuleType, model: type[Event]) -> None:
    validator = jsonschema.Draft202012Validator(schema_of(schemas_dir, model))
    instance = loads(dumps(builders.event(model)))
    assert not validator.is_valid({**instance, "type": "other.type"})
    assert not validator.is_valid({**instance, "version": model.VERSION + 1})
    missing = dict(instance)
    del missing["payload"]
    assert not validator.is_valid(missing)
