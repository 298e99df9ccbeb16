"""Planner service composition root: `faststream run agentbus.planner.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings

from .handlers import PlannerHandlers
from .store import PgTaskStore
from .workflows import Planner, default_planner

settings = Settings(service="planner")
bus = Bus(settings)


def make_planner(settings: Settings) -> Planner:
    """The model planner when a models file is configured, else the deterministic one (offline)."""
    if settings.models_file is None:
        return default_planner()
    # Imported here: the model client (openai) and retrieval (numpy) cost a second of start-up
    # that offline runs skip.
    from agentbus.shared.llm import load_models
    from agentbus.shared.tools import load_registry

    from .model import ModelPlanner

    return ModelPlanner(
        load_models(settings.models_file),
        prompts_dir=settings.prompts_dir,
        policies_dir=settings.policies_dir,
        registry=load_registry(settings.tools_dir),
    )


handlers = PlannerHandlers(bus, planner=make_planner(settings))
bus.subscribe(topics.TASKS_CLASSIFIED, handlers.on_task_classified)
bus.subscribe(topics.ACTIONS_VERIFIED, handlers.on_action_verified)
bus.subscribe(topics.ACTIONS_DECIDED, handlers.on_action_decided)
app = bus.app()


@app.on_startup
async def open_store() -> None:
    handlers.store = PgTaskStore(await open_pool(settings))
