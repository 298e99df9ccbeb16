"""Planner handlers: tasks.classified, actions.verified, actions.decided (deny) → next proposal,
an escalation request, or tasks.finished."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from agentbus.shared.bus import Bus
from agentbus.shared.events import (
    REGISTRY,
    ActionDecidedV1,
    ActionProposedV1,
    ActionVerifiedV1,
    EscalationRequest,
    EscalationRequestedV2,
    Event,
    TaskClassifiedV2,
    TaskFinishedV2,
)

from .store import TaskStore
from .workflows import Planner, TaskState, Transition, default_planner
from .workflows.base import shadowed


class PlannerHandlers:
    def __init__(self, bus: Bus, store: TaskStore | None = None, planner: Planner | None = None) -> None:
        self.bus = bus
        self.store = store
        self.planner = planner or default_planner()

    async def on_task_classified(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, TaskClassifiedV2) and event.ticket_id and event.tenant_id
        task = event.payload
        if not task.eligible or task.workflow is None:
            return []  # intake has already asked for a human
        loaded = await self._store.load(event.ticket_id)
        if loaded is not None:
            return self._replay(loaded[1], event)
        transition = await self.planner.start(event.ticket_id, event.tenant_id, task)
        if transition is None:
            # Intake routed it to a workflow this planner does not run: a human, not a silent drop.
            request = EscalationRequest(
                reason="out_of_scope",
                summary=f"Ticket {event.ticket_id}: no planner runs workflow {task.workflow!r}.",
                details={"workflow": task.workflow, "intent": task.intent},
                rule_ids=["planner.workflow_unknown"],
            )
            return [event.answer(EscalationRequestedV2, request, self.bus.producer)]
        return await self._apply(event, transition)

    async def on_action_verified(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionVerifiedV1)
        return await self._advance(event, lambda state: self.planner.on_verified(state, event.payload))

    async def on_action_decided(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionDecidedV1)
        decision = event.payload
        if decision.verdict == "deny":
            return await self._advance(event, lambda state: self.planner.on_denied(state, decision))
        if decision.rollout == "shadow":
            return await self._advance(event, lambda state: _ready(shadowed(state, decision)))
        return []  # allow: the executor acts; needs_approval: the escalation service asks a human

    async def _advance(
        self, event: Event, step: Callable[[TaskState], Awaitable[Transition | None]]
    ) -> Sequence[Event]:
        """Apply one input to the ticket's task; an input the task no longer waits for is either
        the redelivery of the last one (its outputs go out again) or stale (nothing happens)."""
        assert event.ticket_id
        loaded = await self._store.load(event.ticket_id)
        if loaded is None:
            return []
        state, memo = loaded
        transition = await step(state)
        if transition is None:
            return self._replay(memo, event)
        return await self._apply(event, transition)

    @property
    def _store(self) -> TaskStore:
        assert self.store is not None, "planner store not opened"
        return self.store

    async def _apply(self, cause: Event, transition: Transition) -> list[Event]:
        outputs: list[Event] = []
        producer = self.bus.producer
        # The envelope names the model and prompt versions that shaped this output, or none: the
        # cause's (e.g. intake's classifier) did not shape a plan.
        shaped = model_envelope(transition)
        if transition.proposal is not None:
            outputs.append(cause.answer(ActionProposedV1, transition.proposal, producer, **shaped))
        if transition.escalation is not None:
            outputs.append(cause.answer(EscalationRequestedV2, transition.escalation, producer, **shaped))
        if transition.finished is not None:
            outputs.append(cause.answer(TaskFinishedV2, transition.finished, producer, **shaped))
        memo = {
            "input": cause.event_id,
            "outputs": [o.model_dump(mode="json") for o in outputs],
        }
        await self._store.save(transition.state, memo)
        return outputs

    @staticmethod
    def _replay(memo: dict, cause: Event) -> list[Event]:
        """Redelivery of the last input: publish its outputs again (they may never have left)."""
        if memo.get("input") != cause.event_id:
            return []
        return [REGISTRY[(o["type"], o["version"])].model_validate(o) for o in memo["outputs"]]


def model_envelope(transition: Transition) -> dict[str, str | None]:
    calls = transition.proposal.context.get("model_calls") if transition.proposal else None
    if not isinstance(calls, list) or not calls:
        return {"model": None, "prompt_version": None}
    return {
        "model": str(calls[0]["model"]),  # type: ignore[index,call-overload]
        "prompt_version": "+".join(str(c["prompt_version"]) for c in calls),  # type: ignore[index,call-overload]
    }


async def _ready(transition: Transition | None) -> Transition | None:
    return transition
