"""The whole agentbus stack on one machine: broker, Postgres, topics, migrations, seed, services."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from agentbus.shared.bus import ensure_topics
from agentbus.shared.capabilities import generate_keypair
from agentbus.shared.db import migrate
from agentbus.shared.settings import Settings
from agentbus.shared.tools import load_registry

from . import demo
from .runtime import SERVICES, EmbeddedBroker, EmbeddedPostgres, Supervisor, free_port, wait_port

# A restarted (memory-wiped) Tansu recreates a missing topic on the first metadata request that names
# it, with this many partitions, whatever the client asked (aiokafka always allows auto-creation).
# Topics made by ensure_topics get the same count, so a recreated topic has the shape every producer
# and consumer expects. With another count, producers and consumers that read the metadata at
# different moments disagree on the partitions, and records on a partition no consumer was assigned
# sat unread (tests/integration/test_reconciler.py, 1 run in 4).
TANSU_AUTO_CREATE_PARTITIONS = 4

# Tansu holds each JoinGroup for half the session timeout rounded up to whole seconds (3 s → 2 s,
# 2 s → 1 s, and never less than 1 s), and a service's consumers join one after another: the planner
# and policy, three each, set how long a stack takes to start. 2 s is the shortest timeout that still
# shortens the hold; heartbeats four times in it keep a busy process in its group.
EMBEDDED_BROKER_ENV = {
    "AGENTBUS_TOPIC_PARTITIONS": str(TANSU_AUTO_CREATE_PARTITIONS),
    "AGENTBUS_CONSUMER_SESSION_TIMEOUT_MS": "2000",
    "AGENTBUS_CONSUMER_HEARTBEAT_INTERVAL_MS": "500",
    # How soon consumers see a recreated topic, and how often they look for a lost log (lost_log.py).
    "AGENTBUS_KAFKA_METADATA_MAX_AGE_MS": "5000",
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


def audit_paths(state_dir: Path) -> tuple[Path, Path, Path]:
    """(checkpoints, private keys, public keys) of the audit chain under a state dir. The keys live
    apart from keys/public because executors accept a capability signed by any key in there."""
    keys = state_dir / "keys" / "audit"
    return state_dir / "audit" / "checkpoints", keys / "private", keys / "public"


def state_keypair(private_dir: Path, public_dir: Path, prefix: str) -> Path:
    """The newest private key in `private_dir`, or a new Ed25519 pair `<prefix>-<time>` whose public
    half goes to `public_dir` (the only half other processes are given)."""
    existing = sorted(private_dir.glob("*.key"))
    if existing:
        return existing[-1]
    key_file, pub_file = generate_keypair(private_dir, f"{prefix}-{int(time.time())}")
    public_dir.mkdir(parents=True, exist_ok=True)
    pub_file.rename(public_dir / pub_file.name)
    return key_file


@dataclass
class Stack:
    state_dir: Path
    bootstrap: str | None = None  # None = start the embedded broker
    database_url: str | None = None  # None = start embedded Postgres
    topic_prefix: str = ""
    console_port: int | None = None
    escalation_port: int | None = None  # the approvals API; None = a free port
    services: list[str] | None = None  # None = all
    replicas: dict[str, int] = field(default_factory=dict)  # processes per service (default 1)
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
            escalation_port=int(port) if (port := os.environ.get("AGENTBUS_ESCALATION_PORT")) else None,
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    @property
    def approvals_url(self) -> str:
        return f"http://127.0.0.1:{self.escalation_port}"

    def settings(self) -> Settings:
        assert self.bootstrap and self.database_url
        settings = Settings(
            service="cli",
            kafka_bootstrap_servers=self.bootstrap,
            database_url=self.database_url,
            topic_prefix=self.topic_prefix,
        )
        # The topics this stack creates have as many partitions as its services are told.
        if partitions := self.service_env_overrides().get("AGENTBUS_TOPIC_PARTITIONS"):
            settings = settings.model_copy(update={"topic_partitions": int(partitions)})
        return settings

    def service_env_overrides(self) -> dict[str, str]:
        """What the stack adds to every service's environment: the embedded broker's settings (when
        this stack started it), then the caller's."""
        return {**(EMBEDDED_BROKER_ENV if self.broker else {}), **self.extra_env}

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
        self.escalation_port = self.escalation_port or free_port()
        settings = self.settings()
        await ensure_topics(settings)
        await migrate(self.database_url)
        await demo.seed(self.database_url)
        self.supervisor = self.supervisor_for(logs)
        self.supervisor.start()
        await asyncio.to_thread(self.supervisor.wait_ready)
        if "escalation" in self.supervisor.services:
            # Ready means its consumers joined; uvicorn binds the API port just after that.
            await asyncio.to_thread(wait_port, "127.0.0.1", self.escalation_port)

    def supervisor_for(self, logs: Path, service_env: dict[str, dict[str, str]] | None = None) -> Supervisor:
        """A supervisor (not started) for every service of this stack, each process given the common
        environment plus its own secrets and `service_env`'s additions (by service name)."""
        assert self.bootstrap and self.database_url
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": self.database_url,
            "AGENTBUS_TOPIC_PREFIX": self.topic_prefix,
            "AGENTBUS_POLICIES_DIR": str(repo_root() / "policies"),
            "AGENTBUS_PROMPTS_DIR": os.environ.get("AGENTBUS_PROMPTS_DIR") or str(repo_root() / "prompts"),
            "AGENTBUS_TOOLS_DIR": os.environ.get("AGENTBUS_TOOLS_DIR") or str(repo_root() / "tools"),
            "AGENTBUS_CONSOLE_PORT": str(self.console_port),
            "AGENTBUS_ESCALATION_PORT": str(self.escalation_port),
            "PYTHONUNBUFFERED": "1",
            **self.service_env_overrides(),
        }
        # Secrets go to the one process that needs them; the generic env must not carry them.
        for name in (
            "AGENTBUS_SIGNING_KEY",
            "AGENTBUS_SIGNING_KEY_FILE",
            "AGENTBUS_SIGNING_KEY_ID",
            "AGENTBUS_PII_KEY_FILE",
            "AGENTBUS_AUDIT_SIGNING_KEY_FILE",
        ):
            env.pop(name, None)
        commands = self.service_commands(env)
        own_env = {
            **self.capability_env([n for n in commands if n.startswith("executor-")]),
            "trace-sink": self.audit_env(),
        }
        for name, extra in (service_env or {}).items():
            own_env[name] = {**own_env.get(name, {}), **extra}
        return Supervisor(
            env=env, log_dir=logs, services=commands, service_env=own_env, replicas=dict(self.replicas)
        )

    def service_commands(self, env: dict[str, str]) -> dict[str, list[str]]:
        """Every service to start; the executor runs as one process per tool group
        (`executor-commerce`, …), each with its own consumer group. `services` may name
        `executor` for all of them."""
        registry = load_registry(Path(env["AGENTBUS_TOOLS_DIR"]))
        commands = {name: argv for name, argv in SERVICES.items() if name != "executor"}
        for group in registry.groups():
            commands[f"executor-{group}"] = SERVICES["executor"]
        if self.services is not None:
            wanted = set(self.services)
            commands = {
                name: argv
                for name, argv in commands.items()
                if name in wanted or ("executor" in wanted and name.startswith("executor-"))
            }
        return commands

    def capability_env(self, executors: list[str]) -> dict[str, dict[str, str]]:
        """Signing key for the policy decider only, public keys for the executors only. Taken from
        the environment when set (rotation is the operator's), else one keypair per state dir."""
        signing = {
            k: v
            for k in ("AGENTBUS_SIGNING_KEY", "AGENTBUS_SIGNING_KEY_FILE", "AGENTBUS_SIGNING_KEY_ID")
            if (v := os.environ.get(k))
        }
        verify = {
            k: v for k in ("AGENTBUS_VERIFY_KEYS", "AGENTBUS_VERIFY_KEYS_DIR") if (v := os.environ.get(k))
        }
        if not signing:
            private_dir, public_dir = self.state_dir / "keys" / "private", self.state_dir / "keys" / "public"
            key_file = state_keypair(private_dir, public_dir, "policy")
            signing = {"AGENTBUS_SIGNING_KEY_FILE": str(key_file)}
            verify = verify or {"AGENTBUS_VERIFY_KEYS_DIR": str(public_dir)}
        groups = {
            name: {**verify, "AGENTBUS_EXECUTOR_GROUPS": name.removeprefix("executor-")} for name in executors
        }
        # The PII master key goes to intake alone: the only service that tokenizes.
        pii_key = os.environ.get("AGENTBUS_PII_KEY_FILE") or str(self.state_dir / "keys" / "pii-master.key")
        return {"policy": signing, "intake": {"AGENTBUS_PII_KEY_FILE": pii_key}, **groups}

    def audit_env(self) -> dict[str, str]:
        """The trace sink's checkpoint key and directory: from the environment when set, else one
        key pair and checkpoint directory per state dir. A new embedded database starts a new
        chain, so the previous run's checkpoints are moved aside: they describe a chain that is gone."""
        checkpoints, private_dir, public_dir = audit_paths(self.state_dir)
        key_file = os.environ.get("AGENTBUS_AUDIT_SIGNING_KEY_FILE")
        if not key_file:
            key_file = str(state_keypair(private_dir, public_dir, "audit"))
        directory = os.environ.get("AGENTBUS_AUDIT_CHECKPOINT_DIR")
        if not directory:
            if self.postgres is not None and checkpoints.exists():
                checkpoints.rename(checkpoints.with_name(f"checkpoints-{time.time_ns()}"))
            directory = str(checkpoints)
        return {"AGENTBUS_AUDIT_SIGNING_KEY_FILE": key_file, "AGENTBUS_AUDIT_CHECKPOINT_DIR": directory}

    def stop(self) -> None:
        if self.supervisor:
            self.supervisor.stop()
        if self.broker:
            self.broker.stop()
        if self.postgres:
            self.postgres.stop()


@contextmanager
def throwaway_stack(label: str, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A stack for one run (benchmarks, evals): state in a temporary directory (its parent,
    `stack.state_dir.parent`, is the caller's to use too), topics under a fresh prefix, broker and
    database from KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL when set; stopped on the way out. The
    caller starts it."""
    with tempfile.TemporaryDirectory(prefix=f"agentbus-{label}-") as tmp:
        stack = Stack.from_env(
            Path(tmp) / "state", topic_prefix=f"{label}-{uuid.uuid4().hex[:8]}.", extra_env=extra_env or {}
        )
        try:
            yield stack
        finally:
            stack.stop()
