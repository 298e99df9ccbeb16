"""The topics a ticket crosses through the pipeline, from the topic map: how many Kafka hops the bare
relay of `agentbus bench` must make to match, and which service each hop (stage) is."""

from __future__ import annotations

from itertools import pairwise

from agentbus.planner.workflows import it_access, refunds
from agentbus.shared import topics
from agentbus.shared.topics import TopicSpec

# Each action of a workflow goes round this loop once: proposed → policy → decided → executor →
# executed → verifier → verified → planner (the next proposal, or the end of the task).
ACTION_LOOP: tuple[TopicSpec, ...] = (
    topics.ACTIONS_PROPOSED,
    topics.ACTIONS_DECIDED,
    topics.ACTIONS_EXECUTED,
    topics.ACTIONS_VERIFIED,
)

# Actions of the bench's tickets when every step is allowed: a $10 refund, a password reset.
WORKFLOW_ACTIONS: dict[str, int] = {
    "refunds": len(refunds.STEPS),
    "it_access": len(it_access.STEPS["password_reset"]),
}


def ticket_path(actions: int) -> list[TopicSpec]:
    """The topics a ticket that runs `actions` actions and resolves crosses, in order."""
    if actions < 1:
        raise ValueError("a ticket that resolves runs at least one action")
    return [topics.TICKETS_RECEIVED, topics.TASKS_CLASSIFIED, *ACTION_LOOP * actions, topics.TASKS_FINISHED]


def stage_service(source: TopicSpec, target: TopicSpec) -> str:
    """The one service that consumes `source` and produces `target` (per topics.SERVICE_TOPICS)."""
    found = [
        service
        for service, (consumes, produces) in topics.SERVICE_TOPICS.items()
        if service not in topics.OBSERVERS and source in consumes and target in produces
    ]
    if len(found) != 1:
        raise LookupError(f"{len(found)} services take {source.name} to {target.name}: {found}")
    return found[0]


def hops(actions: int) -> int:
    """Kafka hops (consume → produce by a service) of a ticket that runs `actions` actions; every
    hop of its path must be a stage of the topic map."""
    path = ticket_path(actions)
    for source, target in pairwise(path):
        stage_service(source, target)
    return len(path) - 1


def stages() -> list[tuple[str, str, str]]:
    """(cause event type, effect event type, service) of every distinct stage, in path order."""
    seen: list[tuple[str, str, str]] = []
    for source, target in pairwise(ticket_path(2)):
        stage = (source.event_type, target.event_type, stage_service(source, target))
        if stage not in seen:
            seen.append(stage)
    return seen
