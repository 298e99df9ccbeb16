"""Policy decider composition root: `faststream run agentbus.policy.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import load_signer
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings

from .bundles import BundleSet
from .facts import PgFacts
from .handlers import PolicyHandlers
from .store import PgPolicyStore

settings = Settings(service="policy")
bus = Bus(settings)
handlers = PolicyHandlers(bus, BundleSet(settings.policies_dir))
bus.subscribe(topics.ACTIONS_PROPOSED, handlers.on_action_proposed)
bus.subscribe(topics.APPROVALS_DECIDED, handlers.on_approval_decided)
bus.subscribe(topics.ACTIONS_EXECUTED, handlers.on_action_executed)
app = bus.app()


@app.on_startup
async def open_store() -> None:
    loaded = handlers.bundles.all()  # fail fast on a broken bundle
    if not loaded:
        raise RuntimeError(
            f"no policy bundles under {settings.policies_dir} (expected <workflow>/bundle.toml)"
        )
    handlers.signer = load_signer(
        settings.signing_key_file, settings.signing_key, settings.signing_key_id, settings.capability_ttl_s
    )
    if handlers.signer is None:
        raise RuntimeError(
            "the policy decider needs a signing key: set AGENTBUS_SIGNING_KEY_FILE "
            "(or AGENTBUS_SIGNING_KEY and AGENTBUS_SIGNING_KEY_ID)"
        )
    pool = await open_pool(settings)
    handlers.store = PgPolicyStore(pool)
    handlers.facts = PgFacts(pool)
