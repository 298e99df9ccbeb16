"""The console's own settings (AGENTBUS_CONSOLE_*), beside the shared ones every service reads."""

from __future__ import annotations

from pathlib import Path

from agentbus.shared.settings import Settings
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTBUS_CONSOLE_", extra="ignore", frozen=True)

    # Who may use the console: identities.toml (shared with the approvals API) unless tokens_file
    # names another file in its format; `tokens` adds identities as JSON, e.g.
    # [{"id": "user:dana", "token": "…", "roles": ["operator"]}] (or token_sha256 instead of token).
    tokens_file: Path | None = None
    tokens: str | None = None
    # The escalation service's approvals API; default: AGENTBUS_ESCALATION_HOST/PORT.
    approvals_url: str | None = None
    # The window the KPI gauges (OpenTelemetry) report over; the UI picks its own.
    kpi_window_s: float = 3600.0
    # How often consumer lag is measured (a few broker round trips each time).
    lag_interval_s: float = 5.0
    lag_history: int = 60
    # Tickets whose events the console keeps for the stream and timelines (KPIs keep far more, smaller).
    ticket_capacity: int = 500

    def approvals_base(self, settings: Settings) -> str:
        return (self.approvals_url or f"http://{settings.escalation_host}:{settings.escalation_port}").rstrip(
            "/"
        )

    def tokens_path(self, settings: Settings) -> Path:
        return self.tokens_file or settings.identities_path()
