"""Verifier composition root: `faststream run agentbus.verifier.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import create_pool
from agentbus.shared.settings import Settings

from .handlers import VerifierHandlers

settings = Settings(service="verifier")
bus = Bus(settings)
handlers = VerifierHandlers(bus)
bus.subscribe(topics.ACTIONS_EXECUTED, handlers.on_action_executed)
app = bus.app()


@app.on_startup
async def open_pool() -> None:
    assert settings.database_url, "DATABASE_URL is required by the verifier (systems of record)"
    handlers.pool = await create_pool(settings.database_url, max_size=settings.db_pool_max)
