"""Settings every service reads from the environment (pydantic-settings); defaults fit the embedded stack."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One flat settings object; env names are AGENTBUS_<FIELD> unless noted."""

    model_config = SettingsConfigDict(env_prefix="AGENTBUS_", extra="ignore", frozen=True)

    service: str = "agentbus"
    instance: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "AGENTBUS_KAFKA_BOOTSTRAP_SERVERS"),
    )
    # Tansu rejects InitProducerId, so idempotent producers stay off unless the cluster supports them.
    kafka_idempotence: bool = False
    # Transport and identity (README, Kafka security and ACLs). Each service is its own principal:
    # SASL user, or the CN of its client certificate with SSL (mTLS), named agentbus-<service>.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: Path | None = None  # None = the system's trust store
    kafka_ssl_certfile: Path | None = None  # client certificate (mTLS), PEM
    kafka_ssl_keyfile: Path | None = None  # its private key, PEM
    kafka_ssl_key_password: str | None = None
    # A broker that lost its topics (the embedded one, restarted) recreates each on the first metadata
    # request, with its own partition count; consumers see the change and rebalance after this long,
    # and check as often whether their position lies past the end of a lost log.
    kafka_metadata_max_age_ms: int = 300_000
    # Tansu answers a fetch only when the wait expires; real Kafka answers at once.
    fetch_max_wait_ms: int = 5
    # Tansu answers JoinGroup only after half the session timeout, rounded up to whole seconds, so
    # the embedded stack sets a short one (2 s → 1 s per consumer start); Kafka's usual 10 s stays
    # the default.
    consumer_session_timeout_ms: int = 10_000
    consumer_heartbeat_interval_ms: int = 3_000
    topic_prefix: str = ""
    topic_partitions: int = 3
    # Copies of each topic the init job creates: 1 on one broker (embedded, compose), 3 on a cluster.
    topic_replication_factor: int = 1

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "AGENTBUS_DATABASE_URL")
    )
    db_pool_max: int = 4

    handler_max_attempts: int = 5
    handler_backoff_ms: int = 200

    # Touched once the service's consumers have joined (readiness for `agentbus up` and probes).
    ready_file: Path | None = None

    # Capabilities: the policy decider signs (file or env, with a key id); executors verify with
    # every public key they are given, so keys can be rotated without downtime.
    signing_key_file: Path | None = None
    signing_key: str | None = None  # base64 raw Ed25519 private key
    signing_key_id: str | None = None
    capability_ttl_s: float = 300.0
    verify_keys_dir: Path | None = None
    verify_keys: str | None = None  # "kid=base64raw,kid2=…"

    # Audit chain: the trace sink signs the chain's head into checkpoint files outside the database,
    # so `agentbus audit verify` can detect a truncated tail. No key file means no checkpoints.
    audit_signing_key_file: Path | None = None
    audit_checkpoint_dir: Path | None = None
    audit_checkpoint_interval_s: float = 1.0

    # Extra tool declarations (*.toml) beside the built-in ones; see tools/README.md.
    tools_dir: Path | None = None

    policies_dir: Path = Path("policies")
    # Models: unset = the deterministic planner and rule-based intake (offline); see models.example.toml.
    models_file: Path | None = None
    prompts_dir: Path = Path("prompts")
    # Master key that wraps each data subject's PII key (32 bytes, created on first use).
    pii_key_file: Path | None = None
    # Traces (and metrics) to a collector with "otlp": OTEL_EXPORTER_OTLP_ENDPOINT says where.
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    # Prometheus endpoint (/metrics) of this process; None = none. The embedded stack gives each
    # process its own port from this one up (see agentbus.cli.runtime.Supervisor).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_export_interval_s: float = 15.0  # OTLP metric export period

    console_host: str = "127.0.0.1"
    console_port: int = 8080

    # Escalation: the approvals HTTP API, who may call it, and how long an approval may wait.
    escalation_host: str = "127.0.0.1"
    escalation_port: int = 8081
    identities_file: Path | None = None  # None = <policies_dir>/identities.toml
    approval_ttl_s: float = 3600.0
    # How often escalation expires overdue approvals and republishes decided-but-unpublished ones.
    approval_sweep_interval_s: float = 5.0

    # Reconciler: a ticket neither settled nor moved for reconcile_after_s has its last step re-driven
    # from the audit store, at most reconcile_max_attempts times (each wait twice the one before).
    reconcile_after_s: float = 60.0
    reconcile_interval_s: float = 5.0
    reconcile_max_attempts: int = 5

    @field_validator("kafka_sasl_mechanism", mode="before")
    @classmethod
    def _mechanism_upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        """Refuse half a security configuration at start-up, naming the variable to set."""
        proto = self.kafka_security_protocol
        if proto.startswith("SASL") and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"AGENTBUS_KAFKA_SECURITY_PROTOCOL={proto} needs AGENTBUS_KAFKA_SASL_USERNAME and "
                "AGENTBUS_KAFKA_SASL_PASSWORD"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        if not proto.endswith("SSL") and any(tls_files):
            raise ValueError(
                f"AGENTBUS_KAFKA_SSL_* files are set but AGENTBUS_KAFKA_SECURITY_PROTOCOL={proto}: "
                "use SSL or SASL_SSL, or unset them"
            )
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError(
                "AGENTBUS_KAFKA_SSL_KEYFILE needs AGENTBUS_KAFKA_SSL_CERTFILE (the client's certificate)"
            )
        return self

    def identities_path(self) -> Path:
        return self.identities_file or self.policies_dir / "identities.toml"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
