"""Policy decider composition root: `faststream run agentbus.policy.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings

from .handlers import PolicyHandlers
from .rules import BundleFile
from .store import PgDecisionStore

settings = Settings(service="policy")
bus = Bus(settings)
handlers = PolicyHandlers(bus, BundleFile(settings.policies_dir / "refunds" / "bundle.toml"))
bus.subscribe(topics.ACTIONS_PROPOSED, handlers.on_action_proposed)
bus.subscribe(topics.APPROVALS_DECIDED, handlers.on_approval_decided)
app = bus.app()


@app.on_startup
async def open_store() -> None:
    handlers.bundle.current()  # fail fast on a broken bundle
    handlers.store = PgDecisionStore(await open_pool(settings))
