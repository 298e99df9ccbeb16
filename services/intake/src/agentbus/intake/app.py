"""Intake service composition root: `faststream run agentbus.intake.app:app`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.pii import PiiVault, load_or_create_master_key
from agentbus.shared.settings import Settings

from .handlers import Intake

if TYPE_CHECKING:
    from .classifier import ModelClassifier

settings = Settings(service="intake")
bus = Bus(settings)


def make_classifier(settings: Settings) -> ModelClassifier | None:
    """The model classifier when the models file names one, else None: the rules alone (offline)."""
    if settings.models_file is None:
        return None
    # Imported here: the model client (openai) costs a second of start-up that offline runs skip.
    from agentbus.shared.llm import load_models

    from .classifier import ModelClassifier

    models = load_models(settings.models_file)
    return ModelClassifier(models, settings.prompts_dir) if models.intake else None


intake = Intake(bus, classifier=make_classifier(settings))
bus.subscribe(topics.TICKETS_RECEIVED, intake.on_ticket_received)
app = bus.app()


@app.on_startup
async def open_vault() -> None:
    if settings.pii_key_file is None:
        raise SystemExit("intake: set AGENTBUS_PII_KEY_FILE (the PII master key; created if missing)")
    key_file = settings.pii_key_file
    intake.vault = PiiVault(await open_pool(settings), load_or_create_master_key(key_file))
