"""Live updates: a change signal the consumer raises, and the server-sent event stream each page reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from .view import TicketView

# Bursts of events (a ticket's dozen steps within milliseconds) go out as one message.
COALESCE_S = 0.2
# KPIs move with the clock too (windows slide): refresh them this often with no new events.
KPI_EVERY_S = 2.0
KPI_MIN_GAP_S = 1.0


class Changes:
    """Wakes every waiting stream when something changed; waiters never miss a change, because
    each stream compares versions rather than relying on having been woken."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self, *_: Any) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


def message(kind: str, data: Any) -> dict[str, str]:
    return {"event": kind, "data": orjson.dumps(data).decode()}


async def stream(
    view: TicketView,
    changes: Changes,
    switches: Callable[[], list[dict[str, Any]]],
    kpis: Callable[[], dict[str, Any]],
) -> AsyncIterator[dict[str, str]]:
    """Everything on connect, then what changed: tickets, switches, dead letters, and KPIs."""
    version, deadletters, engaged = -1, -1, None
    loop = asyncio.get_running_loop()
    kpis_at = 0.0
    while True:
        moved = view.version != version
        if version < 0:
            yield message("tickets", view.summary())
        elif moved and (rows := view.changed_since(version)):
            yield message("tickets", rows)
        version = view.version
        if view.deadletters_version != deadletters:
            deadletters = view.deadletters_version
            yield message("deadletters", view.deadletters)
        if (now := switches()) != engaged:
            engaged = now
            yield message("switches", now)
        # KPIs cost a pass over every ticket per bucket: at most once a second however busy.
        since = loop.time() - kpis_at
        if (moved and since >= KPI_MIN_GAP_S) or since >= KPI_EVERY_S:
            kpis_at = loop.time()
            yield message("kpis", kpis())
        await changes.wait(KPI_EVERY_S)
        await asyncio.sleep(COALESCE_S)
