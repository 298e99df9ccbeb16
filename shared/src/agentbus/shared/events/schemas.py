"""JSON Schemas of every (type, version), generated from the models for schemas/."""

from __future__ import annotations

from pathlib import Path

import orjson

from .registry import EVENT_MODELS


def generate() -> dict[str, bytes]:
    """Relative path (`<type>/v<N>.json`) → schema bytes, stable across runs."""
    out: dict[str, bytes] = {}
    for model in EVENT_MODELS:
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"https://agentbus.dev/schemas/{model.TYPE}/v{model.VERSION}.json"
        schema["x-topic-event"] = {"type": model.TYPE, "version": model.VERSION}
        out[f"{model.TYPE}/v{model.VERSION}.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return out


def drift(root: Path) -> list[str]:
    """Files under `root` that differ from the models (missing, changed or unknown)."""
    wanted = generate()
    problems = []
    for rel, content in wanted.items():
        path = root / rel
        if not path.exists():
            problems.append(f"{rel}: missing (run `make schemas`)")
        elif path.read_bytes() != content:
            problems.append(f"{rel}: differs from the model")
    for path in root.rglob("*.json"):
        rel = path.relative_to(root).as_posix()
        if rel not in wanted:
            problems.append(f"{rel}: no model produces it")
    return problems


def write(root: Path) -> list[str]:
    written = []
    for rel, content in generate().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
            written.append(rel)
    return written
