"""Intake service composition root: `faststream run agentbus.intake.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.llm import load_models
from agentbus.shared.pii import PiiVault, load_or_create_master_key
from agentbus.shared.settings import Settings

from .classifier import ModelClassifier
from .handlers import Intake

settings = Settings(service="intake")
bus = Bus(settings)
models = load_models(settings.models_file) if settings.models_file else None
classifier = ModelClassifier(models, settings.prompts_dir) if models and models.intake else None
intake = Intake(bus, classifier=classifier)
bus.subscribe(topics.TICKETS_RECEIVED, intake.on_ticket_received)
app = bus.app()


@app.on_startup
async def open_vault() -> None:
    if settings.pii_key_file is None:
        raise SystemExit("intake: set AGENTBUS_PII_KEY_FILE (the PII master key; created if missing)")
    key_file = settings.pii_key_file
    intake.vault = PiiVault(await open_pool(settings), load_or_create_master_key(key_file))
