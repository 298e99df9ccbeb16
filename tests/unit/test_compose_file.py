"""docker-compose.yml against the Compose specification schema (vendored by check-jsonschema), and
what it promises: every service, health checks, dependencies only on Kafka/Postgres/init (so one
stage can be stopped or scaled alone), keys only where they are used, traces into Jaeger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from agentbus.shared.tools import load_registry
from check_jsonschema.builtin_schemas import get_builtin_schema
from jsonschema.validators import validator_for

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
INFRA = {"kafka", "postgres", "init", "otel-collector", "jaeger"}
AGENTBUS = {
    "intake",
    "planner",
    "policy",
    "verifier",
    "escalation",
    "trace-sink",
    "console",
    "reconciler",
    *(f"executor-{g}" for g in load_registry().groups()),
}
PUBLISHED = {"console", "escalation"}  # one of each: a fixed host port cannot be scaled


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the anchors and `<<` merge keys as Compose does.
    return yaml.safe_load(COMPOSE.read_text())


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = get_builtin_schema("vendor.compose-spec")
    validator = validator_for(schema)(schema)  # the draft the schema declares (2020-12)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    # The check can fail: a misspelt key is refused.
    broken = {
        **compose,
        "services": {**compose["services"], "planner": {**compose["services"]["planner"], "comand": []}},
    }
    assert list(validator.iter_errors(broken))


def test_every_service_and_the_infrastructure(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == AGENTBUS | INFRA
    assert compose["services"]["reconciler"]["command"] == ["python", "-m", "agentbus.reconciler"]
    kafka = compose["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    for name in load_registry().groups():
        executor = compose["services"][f"executor-{name}"]
        assert executor["environment"]["AGENTBUS_EXECUTOR_GROUPS"] == name


def test_services_depend_only_on_kafka_postgres_and_init(compose: dict[str, Any]) -> None:
    for name in AGENTBUS:
        service = compose["services"][name]
        assert service["depends_on"] == {
            "init": {"condition": "service_completed_successfully"},
            "kafka": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }, name
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped"
        assert service["image"] == "agentbus:local" and service["build"]["dockerfile"] == "deploy/Dockerfile"
    for name in ("kafka", "postgres"):
        assert compose["services"][name]["healthcheck"]["test"]


def test_scalable_services_have_no_fixed_name_or_host_port(compose: dict[str, Any]) -> None:
    for name in AGENTBUS:
        service = compose["services"][name]
        assert "container_name" not in service, name
        assert bool(service.get("ports")) is (name in PUBLISHED), name
    assert compose["services"]["console"]["ports"] == ["8080:8080"]


def test_each_key_is_mounted_only_where_it_is_used(compose: dict[str, Any]) -> None:
    def holders(volume: str) -> set[str]:
        return {
            name
            for name, service in compose["services"].items()
            if any(str(v).split(":")[0] == volume for v in service.get("volumes", []))
        }

    assert holders("signing-key") == {"init", "policy"}
    assert holders("verify-keys") == {"init"} | {s for s in AGENTBUS if s.startswith("executor-")}
    assert holders("audit-key") == {"init", "trace-sink"}
    assert holders("pii-key") == {"intake"}
    policy = compose["services"]["policy"]
    assert "signing-key:/var/lib/agentbus/signing-key:ro" in policy["volumes"]
    assert policy["environment"]["AGENTBUS_SIGNING_KEY_FILE"].startswith("/var/lib/agentbus/signing-key/")
    for name in AGENTBUS - {"policy"}:
        assert "AGENTBUS_SIGNING_KEY_FILE" not in compose["services"][name]["environment"], name


def test_traces_go_through_the_collector_to_jaeger(compose: dict[str, Any]) -> None:
    for name in AGENTBUS:
        env = compose["services"][name]["environment"]
        assert env["AGENTBUS_OTEL_EXPORTER"] == "otlp"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]
    assert "127.0.0.1:16686:16686" in compose["services"]["jaeger"]["ports"]
