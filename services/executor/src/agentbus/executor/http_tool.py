"""Generic HTTP tool adapter: calls an external REST API declared in the tool registry, sending the
action's idempotency key as `Idempotency-Key`."""

from __future__ import annotations

import os
from typing import Any

import httpx
from agentbus.shared.tools import HttpCall

from .errors import RetryableToolError, ToolError, UnknownOutcome


def render(template: str, values: dict[str, Any]) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError) as exc:
        raise ToolError(f"URL template {template!r} needs {exc}") from exc


async def call(
    client: httpx.AsyncClient, spec: HttpCall, args: dict[str, Any], key: str, timeout_s: float
) -> dict[str, Any]:
    headers = {"Idempotency-Key": key, "Accept": "application/json"}
    if spec.auth_env:
        secret = os.environ.get(spec.auth_env)
        if not secret:
            raise ToolError(f"secret {spec.auth_env} is not set in the executor's environment")
        headers[spec.auth_header] = f"{spec.auth_scheme} {secret}".strip()
    url = render(spec.url, args)
    body = args if spec.method.upper() in ("POST", "PUT", "PATCH") else None
    try:
        response = await client.request(
            spec.method.upper(), url, json=body, headers=headers, timeout=timeout_s
        )
    except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        # The request may have reached the server: only a retry with the same key can tell.
        raise UnknownOutcome(f"{type(exc).__name__} calling {spec.method} {url}") from exc
    except httpx.TransportError as exc:  # could not connect: nothing was sent
        raise RetryableToolError(f"{type(exc).__name__} connecting to {url}") from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise RetryableToolError(
            f"{spec.method} {url} answered {response.status_code}: {response.text[:200]}"
        )
    if response.status_code >= 400:
        raise ToolError(f"{spec.method} {url} answered {response.status_code}: {response.text[:200]}")
    try:
        data = response.json()
    except ValueError as exc:
        raise ToolError(f"{spec.method} {url} answered non-JSON") from exc
    return data if isinstance(data, dict) else {"value": data}
