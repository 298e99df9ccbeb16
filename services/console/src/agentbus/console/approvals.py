"""The escalation service's approvals API, called with the console user's own bearer token: the
approvals API decides and records who approved; the console holds no credential or signing key."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx


class ApprovalsClient:
    def __init__(
        self, base_url: str, timeout_s: float = 15.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON body) as the API answered; an unreachable API is a 502 with its reason."""
        try:
            response = await self.http.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, json=body
            )
        except httpx.HTTPError as exc:
            reason = f"the approvals API at {self.base_url} did not answer ({type(exc).__name__}: {exc})"
            return 502, {"error": "bad_gateway", "reason": reason}
        try:
            data = response.json()
        except ValueError:
            data = {"error": "bad_gateway", "reason": f"HTTP {response.status_code}: {response.text[:200]}"}
        if response.status_code == 401 and isinstance(data, dict):
            data["reason"] = "the approvals API does not know this token (it reads identities.toml): " + str(
                data.get("reason", "")
            )
        return response.status_code, data

    async def list(self, token: str, status: str) -> tuple[int, Any]:
        return await self.call("GET", f"/approvals?status={quote(status)}", token)

    async def get(self, token: str, approval_id: str) -> tuple[int, Any]:
        return await self.call("GET", f"/approvals/{quote(approval_id, safe='')}", token)

    async def decide(self, token: str, approval_id: str, verb: str, reason: str) -> tuple[int, Any]:
        path = f"/approvals/{quote(approval_id, safe='')}/{verb}"
        return await self.call("POST", path, token, {"reason": reason})
