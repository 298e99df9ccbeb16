"""The whole agentbus stack on one machine: broker, Postgres, topics, migrations, seed, services."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

from agentbus.shared.bus import ensure_topics
from agentbus.shared.db import migrate
from agentbus.shared.settings import Settings

from . import demo
from .runtime import EmbeddedBroker, EmbeddedPostgres, Supervisor, free_port

# Tansu holds JoinGroup for half the session timeout: keep consumer starts short on it.
EMBEDDED_BROKER_ENV = {
    "AGENTBUS_CONSUMER_SESSION_TIMEOUT_MS": "3000",
    "AGENTBUS_CONSUMER_HEARTBEAT_INTERVAL_MS": "1000",
}


def repo_root() -> Path:
    """The checkout (for policies/): found from this file, overridable with AGENTBUS_HOME."""
    if home := os.environ.get("AGENTBUS_HOME"):
        return Path(home)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "policies").is_dir() and (parent / "pyproject.toml").exists():
            return parent
    return Path.cwd()


@dataclass
class Stack:
    state_dir: Path
    bootstrap: str | None = None  # None = start the embedded broker
    database_url: str | None = None  # None = start embedded Postgres
    topic_prefix: str = ""
    console_port: int | None = None
    services: list[str] | None = None  # None = all
    extra_env: dict[str, str] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None
    supervisor: Supervisor | None = None

    @classmethod
    def from_env(cls, state_dir: Path, **kwargs: object) -> Stack:
        return cls(
            state_dir=state_dir,
            bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            database_url=os.environ.get("DATABASE_URL") or None,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    def settings(self) -> Settings:
        assert self.bootstrap and self.database_url
        return Settings(
            service="cli",
            kafka_bootstrap_servers=self.bootstrap,
            database_url=self.database_url,
            topic_prefix=self.topic_prefix,
        )

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        if self.bootstrap is None:
            self.broker = EmbeddedBroker(log_path=logs / "broker.log")
            self.broker.start()
            self.bootstrap = self.broker.bootstrap
        if self.database_url is None:
            self.postgres = EmbeddedPostgres()
            self.database_url = self.postgres.start()
        self.console_port = self.console_port or free_port()
        settings = self.settings()
        await ensure_topics(settings)
        await migrate(self.database_url)
        await demo.seed(self.database_url)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": self.database_url,
            "AGENTBUS_TOPIC_PREFIX": self.topic_prefix,
            "AGENTBUS_POLICIES_DIR": str(repo_root() / "policies"),
            "AGENTBUS_CONSOLE_PORT": str(self.console_port),
            "PYTHONUNBUFFERED": "1",
            **(EMBEDDED_BROKER_ENV if self.broker else {}),
            **self.extra_env,
        }
        self.supervisor = Supervisor(env=env, log_dir=logs)
        if self.services is not None:
            self.supervisor.services = {
                k: v for k, v in self.supervisor.services.items() if k in self.services
            }
        self.supervisor.start()
        await asyncio.to_thread(self.supervisor.wait_ready)

    def stop(self) -> None:
        if self.supervisor:
            self.supervisor.stop()
        if self.broker:
            self.broker.stop()
        if self.postgres:
            self.postgres.stop()
