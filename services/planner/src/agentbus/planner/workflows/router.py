"""The deterministic planner: routes each task, and each outcome of its actions, to the state
machine of the task's workflow."""

from __future__ import annotations

from collections.abc import Iterable

from agentbus.shared.events import Decision, TaskClassified, Verification

from .base import TaskState, Transition, Workflow
from .it_access import ITAccess
from .refunds import Refunds


class WorkflowPlanner:
    """The deterministic `Planner` over several workflows: a task goes to the machine named by
    `task.workflow`, and later inputs to the one named by the stored `state.workflow`."""

    def __init__(self, workflows: Iterable[Workflow]) -> None:
        self.workflows: dict[str, Workflow] = {w.name: w for w in workflows}

    async def start(self, ticket_id: str, tenant_id: str, task: TaskClassified) -> Transition | None:
        workflow = self.workflows.get(task.workflow or "")
        if workflow is None or not task.eligible:
            return None
        return workflow.start(ticket_id, tenant_id, task)

    async def on_verified(self, state: TaskState, verification: Verification) -> Transition | None:
        workflow = self.workflows.get(state.workflow)
        return None if workflow is None else workflow.on_verified(state, verification)

    async def on_denied(self, state: TaskState, decision: Decision) -> Transition | None:
        workflow = self.workflows.get(state.workflow)
        return None if workflow is None else workflow.on_denied(state, decision)


def default_planner() -> WorkflowPlanner:
    """Every workflow this planner knows: refunds and it_access."""
    return WorkflowPlanner([Refunds(), ITAccess()])
