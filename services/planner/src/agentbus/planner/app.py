"""Planner service composition root: `faststream run agentbus.planner.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings

from .handlers import PlannerHandlers
from .store import PgTaskStore

settings = Settings(service="planner")
bus = Bus(settings)
handlers = PlannerHandlers(bus)
bus.subscribe(topics.TASKS_CLASSIFIED, handlers.on_task_classified)
bus.subscribe(topics.ACTIONS_VERIFIED, handlers.on_action_verified)
bus.subscribe(topics.ACTIONS_DECIDED, handlers.on_action_decided)
app = bus.app()


@app.on_startup
async def open_store() -> None:
    handlers.store = PgTaskStore(await open_pool(settings))
