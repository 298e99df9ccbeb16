"""Escalation service composition root: the FastStream consumers and the approvals HTTP API, served
together as one ASGI app (`python -m agentbus.escalation`: uvicorn on AGENTBUS_ESCALATION_HOST/PORT)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.identities import Identities
from agentbus.shared.settings import Settings
from starlette.applications import Starlette

from .api import create_api
from .desk import ApprovalDesk
from .handlers import EscalationHandlers
from .store import PgEscalationStore

settings = Settings(service="escalation")
bus = Bus(settings)
handlers = EscalationHandlers(bus, approval_ttl_s=settings.approval_ttl_s)
bus.subscribe(topics.ESCALATIONS_REQUESTED, handlers.on_escalation_requested)
bus.subscribe(topics.ACTIONS_DECIDED, handlers.on_action_decided)
desk = ApprovalDesk(bus.publish, bus.producer)
# Read once at start: a broken file stops the service here instead of refusing every caller later.
identities = Identities.load(settings.identities_path())


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    pool = await open_pool(settings)
    handlers.store = desk.store = PgEscalationStore(pool)
    await bus.start_control()  # kill switches known before any consumer starts
    await bus.broker.start()
    bus.mark_ready()
    # Expires overdue approvals and republishes decisions the broker has not acknowledged.
    sweeper = asyncio.create_task(desk.run(settings.approval_sweep_interval_s), name="approval-sweep")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await bus.broker.stop()
        await bus.stop_control()
        await pool.close()


app = create_api(desk, identities, lifespan=lifespan)
