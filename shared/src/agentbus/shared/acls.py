"""The Kafka ACLs each identity needs, derived from the topic map the services run on (topics.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .topics import (
    CLIENT_TOPICS,
    LAG_READERS,
    READS_BY_POSITION,
    SERVICE_TOPICS,
    TOPIC_CREATORS,
    TopicSpec,
    topic_name,
)

Resource = Literal["topic", "group"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal["Read", "Write", "Describe", "Create"]

# A SASL user named so, or a client certificate with that CN (README, Kafka security and ACLs).
DEFAULT_PRINCIPAL = "User:agentbus-{identity}"


@dataclass(frozen=True, order=True)
class Acl:
    """One allow rule: `principal` may `operation` on the `resource` called (or starting with) `name`."""

    identity: str
    principal: str
    resource: Resource
    pattern: Pattern
    name: str
    operation: Operation

    def grants(self, operation: Operation, resource: Resource, name: str) -> bool:
        """Kafka's rule: Read and Write each imply Describe; a prefixed name matches by prefix."""
        implied = operation == "Describe" and self.operation in ("Read", "Write")
        if self.resource != resource or not (self.operation == operation or implied):
            return False
        return name.startswith(self.name) if self.pattern == "prefixed" else name == self.name


def identities() -> list[str]:
    return [*SERVICE_TOPICS, *CLIENT_TOPICS, *TOPIC_CREATORS]


def acl_plan(prefix: str = "", principal_format: str = DEFAULT_PRINCIPAL) -> list[Acl]:
    """Every allow rule, identity by identity: nothing is granted that the topic map does not name."""
    if "{identity}" not in principal_format:
        raise ValueError(f"the principal format {principal_format!r} must contain {{identity}}")
    # Topics and consumer groups share one naming root, so one prefix names all of either.
    everything = f"{prefix}agentbus."
    plan: set[Acl] = set()
    for identity in identities():
        principal = principal_format.format(identity=identity)

        def allow(resource: Resource, pattern: Pattern, name: str, operation: Operation) -> None:
            plan.add(Acl(identity, principal, resource, pattern, name, operation))  # noqa: B023

        def topics(specs: tuple[TopicSpec, ...], operation: Operation) -> None:
            for spec in specs:
                allow("topic", "literal", topic_name(spec, prefix), operation)

        consumed, produced = SERVICE_TOPICS.get(identity) or CLIENT_TOPICS.get(identity) or ((), ())
        topics(consumed, "Read")
        topics(READS_BY_POSITION.get(identity, ()), "Read")
        topics(produced, "Write")
        if consumed:
            # Groups are named <prefix>agentbus.<process>.…, and an executor process per tool group
            # is executor-<group>: one prefix covers a service's every group and replica.
            allow("group", "prefixed", f"{prefix}agentbus.{identity}", "Read")
        if identity in LAG_READERS:
            allow("topic", "prefixed", everything, "Describe")
            allow("group", "prefixed", everything, "Describe")
        if identity in TOPIC_CREATORS:
            allow("topic", "prefixed", everything, "Create")
            allow("topic", "prefixed", everything, "Describe")
    return sorted(plan)


def granted(plan: list[Acl], identity: str, operation: Operation, resource: Resource, name: str) -> bool:
    return any(a.identity == identity and a.grants(operation, resource, name) for a in plan)


def kafka_acls_commands(plan: list[Acl], bootstrap: str, command_config: str | None) -> list[str]:
    """The plan as `kafka-acls.sh --add` commands, one per rule, for an admin to review and run."""
    config = f" --command-config {command_config}" if command_config else ""
    lines = []
    for acl in plan:
        pattern = " --resource-pattern-type prefixed" if acl.pattern == "prefixed" else ""
        lines.append(
            f"kafka-acls.sh --bootstrap-server {bootstrap}{config} --add "
            f"--allow-principal '{acl.principal}' --operation {acl.operation} "
            f"--{acl.resource} '{acl.name}'{pattern}"
        )
    return lines
