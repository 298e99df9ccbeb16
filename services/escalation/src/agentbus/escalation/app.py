"""Escalation service composition root: `faststream run agentbus.escalation.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings

from .handlers import EscalationHandlers
from .store import PgEscalationStore

settings = Settings(service="escalation")
bus = Bus(settings)
handlers = EscalationHandlers(bus)
bus.subscribe(topics.ESCALATIONS_REQUESTED, handlers.on_escalation_requested)
bus.subscribe(topics.ACTIONS_DECIDED, handlers.on_action_decided)
app = bus.app()


@app.on_startup
async def open_store() -> None:
    handlers.store = PgEscalationStore(await open_pool(settings))
