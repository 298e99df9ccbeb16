"""The console's HTTP API and page: thin handlers over the view, the approvals API and the control topic.

Reads need any console role; approving needs `approver`, flipping a switch `operator` (auth.py).
Refusals are JSON {"error", "reason"} with 401/403; bad input a 400 that says what to fix.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
from agentbus.shared import timeline
from agentbus.shared.control import SCOPES, SwitchBoard, normalise_target, switch_change
from agentbus.shared.events import ControlSwitchV1, Event, Producer
from agentbus.shared.kpis import KpiLedger
from agentbus.shared.status import ticket_status
from agentbus.shared.validation import problems
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import live
from .approvals import ApprovalsClient
from .auth import APPROVE, COOKIE, OPERATE, Access, Caller, Refused
from .view import TicketView

STATIC = Path(__file__).with_name("static")
WINDOWS = {"5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400}
APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired", "all")
SERIES_BUCKETS = 12


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    token: str = Field(min_length=1)


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str = Field(default="", max_length=2000)


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    scope: Literal["topic", "tool", "agent", "tenant", "global"]
    target: str = Field(default="", max_length=200)
    engaged: bool
    reason: str = Field(min_length=1, max_length=2000, description="recorded in the audit trail")


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code, media_type="application/json")


def error(status_code: int, code: str, reason: str) -> Response:
    return json_response({"error": code, "reason": reason}, status_code)


class BadRequest(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def parse(request: Request, model: type[BaseModel], example: str) -> Any:
    try:
        return model.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise BadRequest(f"expected a JSON object like {example} ({problems(exc, root='body')})") from exc


def window_of(request: Request) -> tuple[datetime, datetime]:
    """?window=15m (or seconds), or ?start=…&end=… (ISO 8601); default the last hour."""
    q = request.query_params
    if "start" in q or "end" in q:
        try:
            start = datetime.fromisoformat(q["start"])
            end = datetime.fromisoformat(q["end"]) if "end" in q else datetime.now(UTC)
        except (KeyError, ValueError) as exc:
            raise BadRequest(
                "start and end must be ISO 8601 times with a zone, e.g. 2026-01-01T12:00:00Z"
            ) from exc
        if start.tzinfo is None or end.tzinfo is None or start >= end:
            raise BadRequest("start and end need a time zone, and start must come before end")
        return start, end
    raw = q.get("window", "1h")
    seconds = WINDOWS.get(raw)
    if seconds is None:
        try:
            seconds = int(raw)
        except ValueError:
            seconds = 0
    if seconds <= 0:
        raise BadRequest(f"unknown window {raw!r}: use one of {', '.join(WINDOWS)} or a number of seconds")
    end = datetime.now(UTC)
    return end - timedelta(seconds=seconds), end


class LagHistory:
    """Consumer lag per service, the latest measurement and a short history for the charts."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.latest: dict[str, int | None] = {}
        self.history: dict[str, list[int | None]] = {}
        self.measured_at: str | None = None
        self.error: str | None = None

    def record(self, lag: dict[str, int | None]) -> None:
        self.latest, self.error = lag, None
        self.measured_at = datetime.now(UTC).isoformat()
        for service, n in lag.items():
            self.history[service] = [*self.history.get(service, []), n][-self.keep :]

    def as_json(self) -> dict[str, Any]:
        return {
            "latest": self.latest,
            "history": self.history,
            "measured_at": self.measured_at,
            "error": self.error,
        }


class Console:
    def __init__(
        self,
        *,
        view: TicketView,
        access: Access,
        approvals: ApprovalsClient,
        board: SwitchBoard,
        publish: Callable[[Event], Awaitable[None]],
        producer: Producer,
        changes: live.Changes,
        lag: LagHistory,
        topic_prefix: str = "",
    ) -> None:
        self.view, self.access, self.approvals, self.board = view, access, approvals, board
        self.publish, self.producer, self.changes, self.lag = publish, producer, changes, lag
        self.topic_prefix = topic_prefix

    # --- plumbing ---------------------------------------------------------------------------------

    def endpoint(
        self, handler: Callable[[Request, Caller], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request, self.access.caller(request))
            except Refused as exc:
                code = "unauthorized" if exc.status == 401 else "forbidden"
                return error(exc.status, code, exc.reason)
            except BadRequest as exc:
                return error(400, "bad_request", exc.reason)

        return run

    def routes(self) -> list[BaseRoute]:
        e = self.endpoint
        return [
            Route("/", self.index),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/healthz", self.healthz),
            Route("/api/session", self.sign_in, methods=["POST"]),
            Route("/api/session", self.sign_out, methods=["DELETE"]),
            Route("/api/me", e(self.me)),
            Route("/api/tickets", e(self.list_tickets)),
            Route("/api/tickets/{ticket_id}", e(self.get_ticket)),
            Route("/api/kpis", e(self.kpis)),
            Route("/api/stream", e(self.stream)),
            Route("/api/deadletters", e(self.deadletters)),
            Route("/api/switches", e(self.list_switches), methods=["GET"]),
            Route("/api/switches", e(self.flip_switch), methods=["POST"]),
            Route("/api/approvals", e(self.list_approvals)),
            Route("/api/approvals/{approval_id}", e(self.get_approval)),
            Route("/api/approvals/{approval_id}/approve", e(self.decide("approve")), methods=["POST"]),
            Route("/api/approvals/{approval_id}/reject", e(self.decide("reject")), methods=["POST"]),
        ]

    # --- page and session -------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def healthz(self, request: Request) -> Response:
        return json_response({"ok": True, "tickets": len(self.view.tickets), "events": self.view.events_seen})

    async def sign_in(self, request: Request) -> Response:
        """Exchange a token for an HttpOnly session cookie (EventSource cannot send headers)."""
        try:
            body = await parse(request, SessionRequest, '{"token": "…"}')
            caller = self.access.by_token(body.token)
        except BadRequest as exc:
            return error(400, "bad_request", exc.reason)
        except Refused as exc:
            return error(exc.status, "unauthorized" if exc.status == 401 else "forbidden", exc.reason)
        response = json_response(caller.as_json())
        # SameSite=Strict: another site cannot make the browser send it (no cross-site writes).
        response.set_cookie(COOKIE, body.token, httponly=True, samesite="strict", path="/")
        return response

    async def sign_out(self, request: Request) -> Response:
        response = json_response({"ok": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    async def me(self, request: Request, caller: Caller) -> Response:
        return json_response(caller.as_json())

    # --- reads ------------------------------------------------------------------------------------

    async def list_tickets(self, request: Request, caller: Caller) -> Response:
        return json_response(self.view.summary())

    async def get_ticket(self, request: Request, caller: Caller) -> Response:
        ticket_id = request.path_params["ticket_id"]
        events = self.view.ticket(ticket_id)
        if events is None:
            return error(404, "not_found", f"no ticket {ticket_id} in the console's recent tickets")
        return json_response(
            {
                "ticket_id": ticket_id,
                "status": ticket_status(events),
                "steps": timeline.steps(events),
                "cost": timeline.cost_summary(events),
                "events": events,
            }
        )

    def kpi_figures(self, start: datetime, end: datetime) -> dict[str, Any]:
        ledger: KpiLedger = self.view.kpis
        return {
            "figures": ledger.figures(start, end).as_json(),
            "series": [k.as_json() for k in ledger.series(start, end, SERIES_BUCKETS)],
            "lag": self.lag.as_json(),
        }

    async def kpis(self, request: Request, caller: Caller) -> Response:
        return json_response(self.kpi_figures(*window_of(request)))

    async def stream(self, request: Request, caller: Caller) -> Response:
        start, end = window_of(request)
        span = end - start

        def kpis() -> dict[str, Any]:
            now = datetime.now(UTC)
            return self.kpi_figures(now - span, now)

        events = live.stream(self.view, self.changes, self.engaged, kpis)
        return EventSourceResponse(events, ping=15)

    async def deadletters(self, request: Request, caller: Caller) -> Response:
        return json_response(self.view.deadletters)

    def engaged(self) -> list[dict[str, Any]]:
        switches = sorted(self.board.engaged.values(), key=lambda s: (s.scope, s.target))
        return [s.model_dump(mode="json") for s in switches]

    async def list_switches(self, request: Request, caller: Caller) -> Response:
        return json_response({"engaged": self.engaged(), "scopes": list(SCOPES)})

    # --- writes -----------------------------------------------------------------------------------

    async def flip_switch(self, request: Request, caller: Caller) -> Response:
        body = await parse(
            request,
            SwitchRequest,
            '{"scope": "topic", "target": "actions.decided", "engaged": true, "reason": "…"}',
        )
        verb = "engage" if body.engaged else "release"
        self.access.require(caller, OPERATE, f"{verb} a kill switch")
        try:
            # The global switch has one target; the panel may leave it blank.
            wanted = body.target or ("all" if body.scope == "global" else "")
            target = normalise_target(body.scope, wanted, self.topic_prefix)
            event: ControlSwitchV1 = switch_change(
                body.scope,
                target,
                engaged=body.engaged,
                reason=body.reason,
                actor=caller.identity.id,  # who flipped it: in the event, so in the audit store
                producer=self.producer,
            )
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        await self.publish(event)
        return json_response({"event_id": event.event_id, **event.payload.model_dump(mode="json")})

    async def list_approvals(self, request: Request, caller: Caller) -> Response:
        status = request.query_params.get("status", "pending")
        if status not in APPROVAL_STATUSES:
            raise BadRequest(f"unknown status {status!r}: use one of {', '.join(APPROVAL_STATUSES)}")
        code, data = await self.approvals.list(caller.token, status)
        return json_response(data, code)

    async def get_approval(self, request: Request, caller: Caller) -> Response:
        code, data = await self.approvals.get(caller.token, request.path_params["approval_id"])
        return json_response(data, code)

    def decide(self, verb: str) -> Callable[[Request, Caller], Awaitable[Response]]:
        async def handler(request: Request, caller: Caller) -> Response:
            self.access.require(caller, APPROVE, f"{verb} an approval")
            body = await parse(request, DecisionRequest, '{"reason": "…"}')
            if verb == "reject" and not body.reason:
                raise BadRequest("a rejection needs a reason: it is shown to whoever takes the ticket over")
            approval_id = request.path_params["approval_id"]
            code, data = await self.approvals.decide(caller.token, approval_id, verb, body.reason)
            return json_response(data, code)

        return handler
