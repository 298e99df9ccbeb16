"""Tool declarations: name, description, group, argument and result JSON Schemas, writes or reads,
timeout, retry policy and post-condition; HTTP tools also their call and read-back."""

from __future__ import annotations

import importlib.resources
import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

BUILTIN = "builtin.toml"


class ToolRegistryError(ValueError):
    """A declaration that cannot be used; the message names the file, the tool and the problem."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 2.0


@dataclass(frozen=True)
class HttpCall:
    """An external REST call. `url` is a template over the arguments ({order_id}); the secret is
    read from the environment variable `auth_env` and sent as `auth_header`."""

    method: str
    url: str
    auth_env: str | None = None
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"


@dataclass(frozen=True)
class HttpCheck:
    """Post-condition for an HTTP tool: GET `url` (template over args and result) and require each
    `expect` field of the response to equal the template's value."""

    url: str
    expect: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    group: str
    writes: bool
    timeout_s: float
    retry: RetryPolicy
    args_schema: dict[str, Any]
    result_schema: dict[str, Any]
    check: str  # post-condition id (built-in), "http" (HttpCheck) or "read_only"
    http: HttpCall | None = None
    http_check: HttpCheck | None = None
    source: str = ""

    @property
    def kind(self) -> str:
        return "http" if self.http else "builtin"

    def function_spec(self) -> dict[str, Any]:
        """The tool as an OpenAI-style function for a model planner (strict arguments)."""
        return {
            "type": "function",
            "function": {
                "name": self.name.replace(".", "__"),
                "description": self.description,
                "parameters": self.args_schema,
                "strict": True,
            },
        }


class ToolRegistry:
    def __init__(self, tools: dict[str, ToolSpec]) -> None:
        self._tools = dict(tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(sorted(self._tools.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def groups(self) -> list[str]:
        return sorted({t.group for t in self._tools.values()})


def _spec(name: str, raw: dict[str, Any], source: str) -> ToolSpec:
    def fail(problem: str) -> ToolRegistryError:
        return ToolRegistryError(f"{source}: tool {name!r}: {problem}")

    try:
        retry = RetryPolicy(**raw.get("retry", {}))
        http = HttpCall(**raw["http"]) if "http" in raw else None
        http_check = HttpCheck(**raw["verify"]) if "verify" in raw else None
    except TypeError as exc:
        raise fail(f"bad retry/http/verify table ({exc})") from exc
    for key in ("description", "group", "writes", "timeout_s", "args", "result"):
        if key not in raw:
            raise fail(f"missing {key!r}")
    for key in ("args", "result"):
        try:
            Draft202012Validator.check_schema(raw[key])
        except SchemaError as exc:
            raise fail(f"{key} schema is invalid: {exc.message}") from exc
    check = raw.get("check", "http" if http_check else "read_only")
    if raw["writes"] and check == "read_only":
        raise fail("a tool that writes needs a post-condition ('check' or a [verify] table)")
    if retry.max_attempts < 1 or float(raw["timeout_s"]) <= 0:
        raise fail("retry.max_attempts must be >= 1 and timeout_s > 0")
    return ToolSpec(
        name=name,
        description=raw["description"],
        group=raw["group"],
        writes=bool(raw["writes"]),
        timeout_s=float(raw["timeout_s"]),
        retry=retry,
        args_schema=raw["args"],
        result_schema=raw["result"],
        check=check,
        http=http,
        http_check=http_check,
        source=source,
    )


def _declarations(text: str, source: str) -> dict[str, ToolSpec]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ToolRegistryError(f"{source}: {exc}") from exc
    return {name: _spec(name, raw, source) for name, raw in data.get("tools", {}).items()}


def load_registry(tools_dir: Path | None = None) -> ToolRegistry:
    """Built-in tools plus every `*.toml` in `tools_dir` (default: AGENTBUS_TOOLS_DIR if set)."""
    builtin = importlib.resources.files(__package__).joinpath(BUILTIN)
    tools = _declarations(builtin.read_text(), f"agentbus.shared.tools/{BUILTIN}")
    directory = tools_dir or (Path(d) if (d := os.environ.get("AGENTBUS_TOOLS_DIR")) else None)
    if directory is not None and directory.is_dir():
        for path in sorted(directory.glob("*.toml")):
            for name, spec in _declarations(path.read_text(), str(path)).items():
                if name in tools:
                    raise ToolRegistryError(
                        f"{path}: tool {name!r} is already declared in {tools[name].source}"
                    )
                tools[name] = spec
    return ToolRegistry(tools)
