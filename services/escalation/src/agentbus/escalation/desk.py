"""The approval desk: people approve or reject pending approvals, overdue ones expire, and each
decision is published from its own row (a transactional outbox) until the broker acknowledged it.

A decision is committed to Postgres first, with the exact event that announces it; publishing comes
after. If the broker is unreachable then, the decision stands and `sweep` republishes the same
event (same event id) later: policy records one outcome per approval id, and the audit store one
row per event id, so a repeat changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from agentbus.shared.events import Event, Producer
from agentbus.shared.identities import Identity

from . import approvals
from .store import ApprovalStore

log = logging.getLogger("agentbus.escalation.desk")

Publish = Callable[[Event], Awaitable[None]]


class DeskError(Exception):
    """A request the desk refuses; `reason` is for the person who asked."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class ApprovalNotFound(DeskError):
    pass


class NotAllowed(DeskError):
    pass


class NotPending(DeskError):
    pass


class ApprovalDesk:
    def __init__(
        self,
        publish: Publish,
        producer: Producer,
        store: ApprovalStore | None = None,
        *,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self._store = store
        self.publish = publish
        self.producer = producer
        self.publish_timeout_s = publish_timeout_s

    @property
    def store(self) -> ApprovalStore:
        assert self._store is not None, "approval store not opened"
        return self._store

    @store.setter
    def store(self, store: ApprovalStore) -> None:
        self._store = store

    async def list(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        return [approvals.view(row) for row in await self.store.list_approvals(status, limit)]

    async def get(self, approval_id: str) -> dict[str, Any]:
        return approvals.view(await self._row(approval_id))

    async def decide(
        self, approval_id: str, identity: Identity, *, approve: bool, reason: str
    ) -> dict[str, Any]:
        """Approve or reject: authorise, commit the decision if still pending, then publish it."""
        row = await self._row(approval_id)
        verb = "approve" if approve else "reject"
        if why := approvals.refusal(identity, row, verb):
            raise NotAllowed(
                why,
                required_role=row["required_role"],
                identity=identity.id,
                roles=sorted(identity.roles),
            )
        if why := approvals.not_pending(row, datetime.now(UTC)):
            raise NotPending(why, status=row["status"])
        event = approvals.decided_event(
            row, approved=approve, identity=identity, reason=reason, producer=self.producer
        )
        status = "approved" if approve else "rejected"
        decided = await self.store.decide(
            approval_id, status, identity.id, reason, event.model_dump(mode="json")
        )
        if decided is None:  # decided by someone else, or expired, since we read it
            current = await self._row(approval_id)
            why = approvals.not_pending(current, now=current["expires_at"])
            raise NotPending(why or f"approval {approval_id} is no longer pending", status=current["status"])
        log.info("%s %s by %s", status, approval_id, identity.id)
        decided["published"] = await self._publish(decided)
        return approvals.view(decided)

    async def expire_due(self) -> int:
        """Expire every pending approval past its time: each becomes an escalation of its ticket."""
        expired = 0
        for row in await self.store.due_for_expiry(100):
            event = approvals.expired_event(row, producer=self.producer)
            reason = f"no decision before {row['expires_at'].isoformat(timespec='seconds')}"
            outcome = event.model_dump(mode="json")
            decided = await self.store.decide(row["id"], "expired", None, reason, outcome)
            if decided is not None:  # else someone decided it just before its time was up
                expired += 1
                log.info("expired %s (ticket %s)", row["id"], row["ticket_id"])
                await self._publish(decided)
        return expired

    async def publish_outbox(self) -> int:
        """Republish decisions whose event the broker has not acknowledged yet."""
        done = 0
        for row in await self.store.unpublished(100):
            done += await self._publish(row)
        return done

    async def sweep(self) -> None:
        await self.expire_due()
        await self.publish_outbox()

    async def run(self, interval_s: float) -> None:
        """Sweep every `interval_s` until cancelled; a failed sweep is logged and tried again."""
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("approval sweep failed; trying again in %.1fs", interval_s)
            await asyncio.sleep(interval_s)

    async def _row(self, approval_id: str) -> dict[str, Any]:
        row = await self.store.get_approval(approval_id)
        if row is None:
            raise ApprovalNotFound(f"no approval {approval_id}")
        return row

    async def _publish(self, row: dict[str, Any]) -> bool:
        try:
            await asyncio.wait_for(self.publish(approvals.outcome(row)), self.publish_timeout_s)
        except Exception as exc:
            log.warning("could not publish the decision of %s yet (%r); the sweep will retry", row["id"], exc)
            return False
        try:
            await self.store.mark_published(row["id"])
        except Exception as exc:  # published all the same; the sweep repeats it (harmlessly)
            log.warning("published %s but could not record it (%r)", row["id"], exc)
        return True
