"""Intake service composition root: `faststream run agentbus.intake.app:app`."""

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.settings import Settings

from .handlers import make_handlers

bus = Bus(Settings(service="intake"))
bus.subscribe(topics.TICKETS_RECEIVED, make_handlers(bus))
app = bus.app()
