"""Topic names (agentbus.<domain>.<event>.v<major>) and which event type each carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    event_type: str
    compacted: bool = False


TICKETS_RECEIVED = TopicSpec("agentbus.tickets.received.v1", "ticket.received")
TASKS_CLASSIFIED = TopicSpec("agentbus.tasks.classified.v1", "task.classified")
ACTIONS_PROPOSED = TopicSpec("agentbus.actions.proposed.v1", "action.proposed")
ACTIONS_DECIDED = TopicSpec("agentbus.actions.decided.v1", "action.decided")
ACTIONS_EXECUTED = TopicSpec("agentbus.actions.executed.v1", "action.executed")
ACTIONS_VERIFIED = TopicSpec("agentbus.actions.verified.v1", "action.verified")
TASKS_FINISHED = TopicSpec("agentbus.tasks.finished.v1", "task.finished")
ESCALATIONS_REQUESTED = TopicSpec("agentbus.escalations.requested.v1", "escalation.requested")
APPROVALS_DECIDED = TopicSpec("agentbus.approvals.decided.v1", "approval.decided")
CONTROL = TopicSpec("agentbus.control.v1", "control.switch", compacted=True)
DEADLETTER = TopicSpec("agentbus.deadletter.v1", "deadletter.recorded")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    TICKETS_RECEIVED,
    TASKS_CLASSIFIED,
    ACTIONS_PROPOSED,
    ACTIONS_DECIDED,
    ACTIONS_EXECUTED,
    ACTIONS_VERIFIED,
    TASKS_FINISHED,
    ESCALATIONS_REQUESTED,
    APPROVALS_DECIDED,
    CONTROL,
    DEADLETTER,
)

TOPIC_FOR_TYPE: dict[str, TopicSpec] = {t.event_type: t for t in ALL_TOPICS}


def topic_name(spec: TopicSpec, prefix: str = "") -> str:
    """Full topic name with the environment prefix (e.g. 'staging.' or a per-test prefix)."""
    return f"{prefix}{spec.name}"


def fixed_partition(spec: TopicSpec) -> int | None:
    """Partition 0 for a compacted topic (the control topic: one ordered log, read from partition 0),
    whatever count a broker gave it when it recreated it; None lets the key choose."""
    return 0 if spec.compacted else None


def consumer_group(service: str, spec: TopicSpec, prefix: str = "") -> str:
    """The consumer group in which `service` (a process name, e.g. executor-commerce) reads `spec`."""
    return f"{prefix}agentbus.{service}.{spec.name}"


# Which topics each service consumes and produces (DESIGN §1). Status, lag and ACLs derive from it.
SERVICE_TOPICS: dict[str, tuple[tuple[TopicSpec, ...], tuple[TopicSpec, ...]]] = {
    "intake": ((TICKETS_RECEIVED,), (TASKS_CLASSIFIED, ESCALATIONS_REQUESTED, DEADLETTER)),
    "planner": (
        (TASKS_CLASSIFIED, ACTIONS_VERIFIED, ACTIONS_DECIDED),
        (ACTIONS_PROPOSED, ESCALATIONS_REQUESTED, TASKS_FINISHED, DEADLETTER),
    ),
    # actions.executed: budgets reserved at decision time are settled (or released) after execution.
    "policy": ((ACTIONS_PROPOSED, APPROVALS_DECIDED, ACTIONS_EXECUTED), (ACTIONS_DECIDED, DEADLETTER)),
    "executor": ((ACTIONS_DECIDED,), (ACTIONS_EXECUTED, DEADLETTER)),
    "verifier": ((ACTIONS_EXECUTED,), (ACTIONS_VERIFIED, ESCALATIONS_REQUESTED, DEADLETTER)),
    # escalations.requested: an approval nobody decides in time expires into an escalation.
    "escalation": (
        (ESCALATIONS_REQUESTED, ACTIONS_DECIDED),
        (APPROVALS_DECIDED, ESCALATIONS_REQUESTED, TASKS_FINISHED, DEADLETTER),
    ),
    "trace-sink": (ALL_TOPICS, ()),
    # Consumes nothing (it reads the audit store); re-drives stalled tickets' events to their topics.
    "reconciler": ((), tuple(t for t in ALL_TOPICS if t not in (CONTROL, DEADLETTER))),
    "console": (ALL_TOPICS, (CONTROL,)),
}

# Services that record or show events; a ticket never waits on them.
OBSERVERS: tuple[str, ...] = ("trace-sink", "console", "reconciler")

# Identities that are not services: the upstream systems that publish tickets, the operators' CLI
# (submit, kill switches, re-drive) and the one-shot init job that creates the topics.
CLIENT_TOPICS: dict[str, tuple[tuple[TopicSpec, ...], tuple[TopicSpec, ...]]] = {
    "ticket-source": ((), (TICKETS_RECEIVED,)),
    "operator": ((), tuple(dict.fromkeys((TICKETS_RECEIVED, CONTROL, *SERVICE_TOPICS["reconciler"][1])))),
}
TOPIC_CREATORS: tuple[str, ...] = ("init",)

# Read outside any consumer group (by assignment): every service but the reconciler, and the
# operators' CLI, follow the control topic for the kill switches; the reconciler reads stalled
# tickets' records by position to tell a lost record from a queued one.
READS_BY_POSITION: dict[str, tuple[TopicSpec, ...]] = {
    **{service: (CONTROL,) for service in SERVICE_TOPICS if service != "reconciler"},
    "operator": (CONTROL,),
    "reconciler": tuple(
        dict.fromkeys(
            spec
            for service, (consumed, _) in SERVICE_TOPICS.items()
            if service not in OBSERVERS
            for spec in consumed
        )
    ),
}
# They measure consumer lag: every agentbus group's committed offsets, every topic's end offsets.
LAG_READERS: tuple[str, ...] = ("console", "reconciler", "operator")


def identity_of(service: str) -> str | None:
    """The identity (Kafka principal) a process runs as: its service (`executor-commerce` and
    `policy-2` included), `operator` for the CLI; None for a name outside the topic map."""
    if service in SERVICE_TOPICS or service in CLIENT_TOPICS:
        return service
    if service == "cli":
        return "operator"
    base = "executor" if service.startswith("executor-") else service.rsplit("-", 1)[0]
    return base if base in SERVICE_TOPICS else None
