"""Workflow planning: the `Planner` interface, one deterministic state machine per workflow
(`refunds`, `it_access`) and `WorkflowPlanner`, which routes a task to its workflow's machine."""

from .base import Planner, TaskState, Transition, Workflow
from .it_access import ITAccess
from .refunds import Refunds
from .router import WorkflowPlanner, default_planner

__all__ = [
    "ITAccess",
    "Planner",
    "Refunds",
    "TaskState",
    "Transition",
    "Workflow",
    "WorkflowPlanner",
    "default_planner",
]
