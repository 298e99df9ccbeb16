"""Library used by every agentbus service: event contract, topics, settings, bus, database, telemetry."""

__version__ = "0.1.0"
