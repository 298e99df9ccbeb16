"""Each service, built as its composition root builds it under a secured cluster's settings, gives
every Kafka client it makes the bootstrap servers and SASL/TLS settings (its own user), and
subscribes only to topics and groups its ACLs grant (acceptance of issue 9, points 2 and 3)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from agentbus.shared.acls import acl_plan, granted
from agentbus.shared.topics import CONTROL, identity_of, topic_name
from tls_certs import ThrowawayCA

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SERVICES = ("intake", "planner", "policy", "executor", "verifier", "escalation", "trace-sink", "console")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ca = ThrowawayCA.create(tmp_path_factory.mktemp("ca"))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-0.example:9093,kafka-1.example:9093",
        "AGENTBUS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "AGENTBUS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "AGENTBUS_KAFKA_SASL_PASSWORD": "per-service-secret",
        "AGENTBUS_KAFKA_SSL_CAFILE": str(ca.cert_path),
        "AGENTBUS_TOPIC_PREFIX": "prod.",
        "AGENTBUS_POLICIES_DIR": str(REPO / "policies"),
        "AGENTBUS_TOOLS_DIR": str(REPO / "tools"),
    }
    out = subprocess.run(
        [sys.executable, str(TESTS / "service_clients.py")], env=env, capture_output=True, timeout=120
    )
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    return orjson.loads(out.stdout)


def clients(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    names = ("producer", "consumers", "control", "broker_log", "broker_log_admin", "lag_probe")
    return {name: report[name] for name in names if name in report}


@pytest.mark.parametrize("service", [*SERVICES, "reconciler"])
def test_every_client_of_a_service_uses_the_cluster_and_its_own_identity(
    built: dict[str, Any], service: str
) -> None:
    made = clients(built[service])
    assert len(made) >= 3  # producer, consumers, kill-switch follower; the reconciler's three readers
    for name, client in made.items():
        hosts = client["bootstrap_servers"]
        hosts = hosts.split(",") if isinstance(hosts, str) else hosts
        assert hosts == ["kafka-0.example:9093", "kafka-1.example:9093"], name
        assert client["security_protocol"] == "SASL_SSL", name
        assert client["sasl_mechanism"] == "SCRAM-SHA-512", name
        assert client["sasl_plain_username"] == f"agentbus-{service}", name
        assert client["sasl_plain_password"] == "per-service-secret", name
        assert client["ca_subjects"] == [{"commonName": "agentbus test CA"}], name


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_subscribes_only_to_what_its_acls_grant(built: dict[str, Any], service: str) -> None:
    plan = acl_plan("prod.")
    report = built[service]
    identity = identity_of(report["service"])
    assert identity == service
    assert report["subscriptions"], "every service but the reconciler consumes something"
    for subscription in report["subscriptions"]:
        for topic in subscription["topics"]:
            assert granted(plan, identity, "Read", "topic", topic), f"{service} reads {topic}"
        assert granted(plan, identity, "Read", "group", subscription["group"]), subscription["group"]
    if report["follows_control"]:
        assert granted(plan, identity, "Read", "topic", topic_name(CONTROL, "prod."))


def test_the_reconciler_reads_and_describes_only_what_its_acls_grant(built: dict[str, Any]) -> None:
    plan = acl_plan("prod.")
    report = built["reconciler"]
    assert report["reads_by_position"] and report["describes_groups"]
    for topic in report["reads_by_position"]:
        assert granted(plan, "reconciler", "Read", "topic", topic), topic
    for group in report["describes_groups"]:
        assert granted(plan, "reconciler", "Describe", "group", group), group
        assert not granted(plan, "reconciler", "Read", "group", group), "it joins no group"
