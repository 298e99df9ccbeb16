"""Policy handlers: actions.proposed and approvals.decided → actions.decided."""

from __future__ import annotations

from collections.abc import Sequence

from agentbus.shared.bus import Bus
from agentbus.shared.events import (
    ActionDecidedV1,
    ActionProposedV1,
    ApprovalDecidedV1,
    Decision,
    Event,
)

from . import rules
from .store import DecisionStore


class PolicyHandlers:
    def __init__(self, bus: Bus, bundle: rules.BundleFile, store: DecisionStore | None = None) -> None:
        self.bus = bus
        self.bundle = bundle
        self.store = store

    async def on_action_proposed(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ActionProposedV1)
        bundle = self.bundle.current()
        return [await self._record(event, rules.decide(event.payload, bundle), bundle.version, "")]

    async def on_approval_decided(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ApprovalDecidedV1)
        bundle = self.bundle.current()
        assert self.store is not None, "policy store not opened"
        sent = await self.store.get(event.payload.proposal.action_id)
        pending = None
        if sent is not None and sent["payload"]["verdict"] == "needs_approval":
            pending = ActionDecidedV1.model_validate(sent).payload.proposal
        decision = rules.decide_approval(event.payload, bundle, pending)
        # Keyed per approval, not per action: one forged or mistaken approval event must not fix
        # the outcome for every later one. Two allows for one action still act once (effect ledger).
        suffix = f":approval:{event.payload.approval_id}"
        return [await self._record(event, decision, bundle.version, suffix)]

    async def _record(self, cause: Event, decision: Decision, version: str, suffix: str) -> Event:
        assert self.store is not None, "policy store not opened"
        key = decision.proposal.action_id + suffix
        stored = await self.store.get(key)
        if stored is None:
            fresh = cause.answer(ActionDecidedV1, decision, self.bus.producer, policy_version=version)
            stored = await self.store.put(key, cause.ticket_id, fresh.model_dump(mode="json"))
        return ActionDecidedV1.model_validate(stored)
