"""The tool registry: every tool declared once (TOML), read by the planner, policy, executor and
verifier. Built-in tools ship in `builtin.toml`; deployments add tools in `AGENTBUS_TOOLS_DIR`."""

from .registry import (
    HttpCall,
    HttpCheck,
    RetryPolicy,
    ToolRegistry,
    ToolRegistryError,
    ToolSpec,
    load_registry,
)

__all__ = [
    "HttpCall",
    "HttpCheck",
    "RetryPolicy",
    "ToolRegistry",
    "ToolRegistryError",
    "ToolSpec",
    "load_registry",
]
