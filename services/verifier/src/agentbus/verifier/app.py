"""Verifier composition root: `faststream run agentbus.verifier.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings
from agentbus.shared.tools import load_registry

from .handlers import VerifierHandlers

settings = Settings(service="verifier")
bus = Bus(settings)
handlers = VerifierHandlers(bus, load_registry(settings.tools_dir))
bus.subscribe(topics.ACTIONS_EXECUTED, handlers.on_action_executed)
app = bus.app()


@app.on_startup
async def open_database() -> None:
    handlers.pool = await open_pool(settings)  # reads the systems of record back
