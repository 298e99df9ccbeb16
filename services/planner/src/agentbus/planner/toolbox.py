"""The tools a planner may offer a model, as function schemas built from the tool registry (the
one place tools are declared), for the tools a workflow uses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agentbus.shared.tools import ToolRegistry, load_registry


def function_specs(tool_names: Iterable[str], registry: ToolRegistry | None = None) -> list[dict[str, Any]]:
    """OpenAI-style function definitions, strict arguments, for each named tool in the registry."""
    registry = registry or load_registry()
    specs = []
    for name in tool_names:
        spec = registry.get(name)
        if spec is None:
            raise KeyError(f"tool {name!r} is not in the tool registry")
        specs.append(spec.function_spec())
    return specs
