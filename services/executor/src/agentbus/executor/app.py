"""Executor composition root: `faststream run agentbus.executor.app:app`.

AGENTBUS_EXECUTOR_GROUPS (e.g. `commerce`) makes this process serve only those tool groups, as
its own service `executor-<groups>` with its own consumer group: one slow system cannot hold the
others, and each group can be scaled or stopped on its own."""

import os

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import Verifier, load_verify_keys
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings
from agentbus.shared.tools import load_registry

from .handlers import ExecutorHandlers
from .store import PgEffectLedger
from .tools import BUILTINS

groups_env = os.environ.get("AGENTBUS_EXECUTOR_GROUPS", "").strip()
groups = {g.strip() for g in groups_env.split(",") if g.strip()} or None
service = "executor" if groups is None else "executor-" + "-".join(sorted(groups))
settings = Settings(service=service)
bus = Bus(settings)
handlers = ExecutorHandlers(bus, registry=load_registry(settings.tools_dir), groups=groups)
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
    missing = [t.name for t in handlers.registry if t.http is None and t.name not in BUILTINS]
    if missing:
        raise RuntimeError(f"built-in tools declared without an implementation: {', '.join(missing)}")
    handlers.verifier = Verifier(keys)
    handlers.pool = await open_pool(settings)
    handlers.ledger = PgEffectLedger(handlers.pool)
