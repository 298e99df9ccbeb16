"""The approvals HTTP API (Starlette): list and show approvals, approve or reject one.

Authentication is a bearer token from identities.toml; the desk does the rest. See openapi.py for
the contract, which /openapi.json serves."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from agentbus.shared.identities import Identities, Identity, bearer_token
from agentbus.shared.validation import problems
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .approvals import STATUSES
from .desk import ApprovalDesk, ApprovalNotFound, DeskError, NotAllowed, NotPending
from .openapi import SPEC

Endpoint = Callable[[Request], Awaitable[Response]]


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str = Field(default="", max_length=2000)


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str = Field(min_length=1, max_length=2000)


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code, headers, media_type="application/json")


def error(status_code: int, code: str, reason: str, **details: Any) -> Response:
    headers = {"WWW-Authenticate": 'Bearer realm="agentbus"'} if status_code == 401 else None
    return json_response({"error": code, "reason": reason, **details}, status_code, headers)


def create_api(
    desk: ApprovalDesk,
    identities: Identities,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
) -> Starlette:
    def authenticated(handler: Callable[[Request, Identity], Awaitable[Response]]) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            token = bearer_token(request.headers.get("authorization"))
            if token is None:
                return error(401, "unauthorized", "missing bearer token: send Authorization: Bearer <token>")
            identity = identities.authenticate(token)
            if identity is None:
                return error(401, "unauthorized", "unknown token: it matches no identity in identities.toml")
            try:
                return await handler(request, identity)
            except NotAllowed as exc:
                return error(403, "forbidden", exc.reason, **exc.details)
            except ApprovalNotFound as exc:
                return error(404, "not_found", exc.reason)
            except NotPending as exc:
                return error(409, "conflict", exc.reason, **exc.details)
            except DeskError as exc:
                return error(400, "bad_request", exc.reason)

        return endpoint

    async def list_approvals(request: Request, identity: Identity) -> Response:
        status = request.query_params.get("status", "all")
        if status not in (*STATUSES, "all"):
            choices = ", ".join((*STATUSES, "all"))
            return error(400, "bad_request", f"unknown status {status!r}: use one of {choices}")
        found = await desk.list(None if status == "all" else status)
        return json_response({"approvals": found})

    async def get_approval(request: Request, identity: Identity) -> Response:
        return json_response(await desk.get(request.path_params["approval_id"]))

    def decide(approve: bool) -> Callable[[Request, Identity], Awaitable[Response]]:
        model = ApproveRequest if approve else RejectRequest

        async def handler(request: Request, identity: Identity) -> Response:
            raw = await request.body()
            try:
                body = model.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                expected = 'a JSON object like {"reason": "…"}'
                return error(400, "bad_request", f"expected {expected} ({problems(exc, root='body')})")
            approval = await desk.decide(
                request.path_params["approval_id"], identity, approve=approve, reason=body.reason
            )
            return json_response(approval)

        return handler

    async def openapi(request: Request) -> Response:
        return json_response(SPEC)

    async def healthz(request: Request) -> Response:
        return json_response({"ok": True})

    return Starlette(
        routes=[
            Route("/approvals", authenticated(list_approvals), methods=["GET"]),
            Route("/approvals/{approval_id}", authenticated(get_approval), methods=["GET"]),
            Route("/approvals/{approval_id}/approve", authenticated(decide(True)), methods=["POST"]),
            Route("/approvals/{approval_id}/reject", authenticated(decide(False)), methods=["POST"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
