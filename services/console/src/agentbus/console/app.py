"""Console composition root: an ASGI app (Starlette) fed by a FastStream consumer of every topic."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.settings import Settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .page import PAGE
from .view import TicketView

settings = Settings(service="console")
bus = Bus(settings)
view = TicketView()


async def on_records(records: list[Any]) -> None:
    for record in records:
        view.add_raw(record.value)


# A group per console instance: every console reads the whole history into its own view.
bus.subscribe_batch(topics.ALL_TOPICS, on_records, group=f"console.{settings.instance}")


async def index(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def list_tickets(request: Request) -> Response:
    return JSONResponse(view.summary())


async def get_ticket(request: Request) -> Response:
    events = view.ticket(request.path_params["ticket_id"])
    if events is None:
        return JSONResponse({"error": "unknown ticket"}, status_code=404)
    return JSONResponse({"ticket_id": request.path_params["ticket_id"], "events": events})


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True, "tickets": len(view.tickets)})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    await bus.broker.start()
    bus.mark_ready()
    try:
        yield
    finally:
        await bus.broker.stop()


app = Starlette(
    routes=[
        Route("/", index),
        Route("/api/tickets", list_tickets),
        Route("/api/tickets/{ticket_id}", get_ticket),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)
