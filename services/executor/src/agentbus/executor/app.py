"""Executor composition root: `faststream run agentbus.executor.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import Verifier, load_verify_keys
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings

from .handlers import ExecutorHandlers
from .store import PgEffectLedger

settings = Settings(service="executor")
bus = Bus(settings)
handlers = ExecutorHandlers(bus)
bus.subscribe(topics.ACTIONS_DECIDED, handlers.on_action_decided)
app = bus.app()


@app.on_startup
async def open_database() -> None:
    keys = load_verify_keys(settings.verify_keys_dir, settings.verify_keys)
    if not keys:
        raise RuntimeError(
            "the executor needs capability verification keys: set AGENTBUS_VERIFY_KEYS_DIR "
            "(a directory of <kid>.pub files) or AGENTBUS_VERIFY_KEYS"
        )
    handlers.verifier = Verifier(keys)
    handlers.pool = await open_pool(settings)
    handlers.ledger = PgEffectLedger(handlers.pool)
