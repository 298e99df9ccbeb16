"""The ACL plan grants each identity exactly its part of the topic map, and the bus refuses any use of
a topic outside it, so a service cannot drift from the ACLs generated for it."""

from __future__ import annotations

import pytest
from agentbus.cli.main import app
from agentbus.shared.acls import acl_plan, granted
from agentbus.shared.bus import Bus, TopicNotGranted
from agentbus.shared.events import TicketReceivedV1
from agentbus.shared.settings import Settings
from agentbus.shared.topics import (
    ALL_TOPICS,
    CLIENT_TOPICS,
    READS_BY_POSITION,
    SERVICE_TOPICS,
    TICKETS_RECEIVED,
    topic_name,
)
from builders import event
from typer.testing import CliRunner


@pytest.mark.parametrize("identity", [*SERVICE_TOPICS, *CLIENT_TOPICS])
def test_each_identity_may_read_and_write_exactly_its_topics(identity: str) -> None:
    plan = acl_plan("staging.")
    consumed, produced = SERVICE_TOPICS.get(identity) or CLIENT_TOPICS[identity]
    may_read = {
        t.name for t in ALL_TOPICS if granted(plan, identity, "Read", "topic", topic_name(t, "staging."))
    }
    may_write = {
        t.name for t in ALL_TOPICS if granted(plan, identity, "Write", "topic", topic_name(t, "staging."))
    }
    assert may_read == {t.name for t in (*consumed, *READS_BY_POSITION.get(identity, ()))}
    assert may_write == {t.name for t in produced}
    # Nothing outside the deployment's prefix, and no wildcard read or write.
    assert not granted(plan, identity, "Read", "topic", topic_name(TICKETS_RECEIVED, "prod."))
    assert all(
        a.pattern == "literal" for a in plan if a.resource == "topic" and a.operation in ("Read", "Write")
    )


def test_groups_are_per_service_and_only_the_init_job_creates_topics() -> None:
    plan = acl_plan()
    assert granted(
        plan, "executor", "Read", "group", "agentbus.executor-commerce.agentbus.actions.decided.v1"
    )
    assert not granted(plan, "executor", "Read", "group", "agentbus.policy.agentbus.actions.proposed.v1")
    assert not granted(plan, "ticket-source", "Read", "group", "agentbus.intake.agentbus.tickets.received.v1")
    creators = {a.identity for a in plan if a.operation == "Create"}
    assert creators == {"init"}


def test_the_bus_refuses_a_topic_outside_the_services_part_of_the_map() -> None:
    bus = Bus(Settings(service="verifier", kafka_bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(TopicNotGranted, match=r"verifier consumes agentbus\.tickets\.received\.v1"):
        bus.subscribe(TICKETS_RECEIVED, lambda event: None)  # type: ignore[arg-type, return-value]


async def test_the_bus_refuses_to_publish_outside_the_map_before_touching_the_broker() -> None:
    bus = Bus(Settings(service="executor-commerce", kafka_bootstrap_servers="127.0.0.1:1"))
    with pytest.raises(TopicNotGranted, match=r"executor-commerce produces agentbus\.tickets\.received\.v1"):
        await bus.publish(event(TicketReceivedV1))


def test_cli_prints_kafka_acls_commands_for_a_prefix_and_principal_format() -> None:
    result = CliRunner().invoke(
        app,
        [
            "acl-plan",
            "--format",
            "kafka-acls",
            "--prefix",
            "prod.",
            "--principal",
            "User:CN=agentbus-{identity}",
            "--bootstrap",
            "kafka:9093",
            "--command-config",
            "admin.properties",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == len(acl_plan("prod."))
    assert (
        "kafka-acls.sh --bootstrap-server kafka:9093 --command-config admin.properties --add "
        "--allow-principal 'User:CN=agentbus-intake' --operation Read "
        "--topic 'prod.agentbus.tickets.received.v1'"
    ) in lines
    assert (
        "kafka-acls.sh --bootstrap-server kafka:9093 --command-config admin.properties --add "
        "--allow-principal 'User:CN=agentbus-intake' --operation Read --group 'prod.agentbus.intake' "
        "--resource-pattern-type prefixed"
    ) in lines


def test_cli_says_what_to_fix_in_a_principal_format() -> None:
    result = CliRunner().invoke(app, ["acl-plan", "--principal", "User:intake"])
    assert result.exit_code == 2
    assert "must contain {identity}" in result.output
