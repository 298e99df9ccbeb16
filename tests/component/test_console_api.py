"""The console's API in memory, with the real escalation approvals API behind it (an in-memory approval
store): who may read, approve and flip switches, what each write records, and what bad input gets."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import builders
import httpx
import pytest
from agentbus.console import live
from agentbus.console.approvals import ApprovalsClient
from agentbus.console.auth import Access
from agentbus.console.routes import Console, LagHistory
from agentbus.console.view import TicketView
from agentbus.escalation.api import create_api
from agentbus.escalation.desk import ApprovalDesk
from agentbus.shared.control import SwitchBoard
from agentbus.shared.events import (
    ApprovalDecidedV1,
    ControlSwitchV1,
    Event,
    TaskFinishedV2,
    TicketReceivedV1,
)
from agentbus.shared.identities import Identities
from agentbus.shared.serialization import dumps
from starlette.applications import Starlette

REPO = Path(__file__).resolve().parents[2]
BOB = {"Authorization": "Bearer bob-demo-token"}  # viewer
ALICE = {"Authorization": "Bearer alice-demo-token"}  # approver (and refund-approver for the API)
CAROL = {"Authorization": "Bearer carol-demo-token"}  # operator


class MemoryApprovals:
    """The escalation service's ApprovalStore, in a dict."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {r["id"]: r for r in rows}

    async def list_approvals(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return [r for r in self.rows.values() if status is None or r["status"] == status][:limit]

    async def get_approval(self, approval_id: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.rows.get(approval_id))

    async def decide(
        self, approval_id: str, status: str, approver: str | None, reason: str, outcome_event: dict[str, Any]
    ) -> dict[str, Any] | None:
        row = self.rows[approval_id]
        if row["status"] != "pending":
            return None
        row.update(
            status=status,
            approver=approver,
            decided_reason=reason,
            decided_at=datetime.now(UTC),
            outcome_event=outcome_event,
        )
        return copy.deepcopy(row)

    async def due_for_expiry(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def unpublished(self, limit: int) -> list[dict[str, Any]]:
        return []

    async def mark_published(self, approval_id: str) -> None:
        self.rows[approval_id]["published"] = True


class Harness:
    def __init__(self) -> None:
        self.published: list[Event] = []
        decision = builders.needs_approval()
        self.store = MemoryApprovals([builders.approval_row(decision, datetime.now(UTC))])
        identities = Identities.load(REPO / "policies" / "identities.toml")
        desk = ApprovalDesk(self.record, builders.PRODUCER, self.store)
        escalation = create_api(desk, identities)
        self.view = TicketView()
        self.view.add_raw(dumps(builders.event(TicketReceivedV1)))
        self.view.add_raw(dumps(decision))
        self.console = Console(
            view=self.view,
            access=Access(identities),
            approvals=ApprovalsClient("http://escalation", transport=httpx.ASGITransport(app=escalation)),
            board=SwitchBoard(),
            publish=self.record,
            producer=builders.PRODUCER,
            changes=live.Changes(),
            lag=LagHistory(10),
        )

    async def record(self, event: Event) -> None:
        self.published.append(event)


@pytest.fixture
async def harness() -> Harness:
    return Harness()


@pytest.fixture
async def http(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=harness.console.routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console") as c:
        yield c


async def test_a_viewer_reads_but_cannot_approve_or_flip_a_switch(harness: Harness, http: httpx.AsyncClient):
    assert (await http.get("/api/tickets", headers=BOB)).json()[0]["status"] == "awaiting_approval"
    pending = (await http.get("/api/approvals", headers=BOB)).json()["approvals"]
    assert [a["id"] for a in pending] == ["AP-0123456789"]

    refused = await http.post("/api/approvals/AP-0123456789/approve", headers=BOB, json={"reason": "ok"})
    assert refused.status_code == 403
    assert refused.json()["reason"] == (
        "to approve an approval you need the console role approver; user:bob has: viewer"
    )
    switch = {"scope": "topic", "target": "actions.decided", "engaged": True, "reason": "incident 42"}
    refused = await http.post("/api/switches", headers=BOB, json=switch)
    assert refused.status_code == 403 and "console role operator" in refused.json()["reason"]

    assert harness.store.rows["AP-0123456789"]["status"] == "pending"
    assert harness.published == []


async def test_an_approver_approves_as_themselves(harness: Harness, http: httpx.AsyncClient):
    done = await http.post("/api/approvals/AP-0123456789/approve", headers=ALICE, json={"reason": "fine"})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["approver"]) == ("approved", "user:alice")
    [event] = harness.published
    assert isinstance(event, ApprovalDecidedV1)
    assert (event.payload.approved, event.payload.approver) == (True, "user:alice")
    again = await http.post("/api/approvals/AP-0123456789/reject", headers=ALICE, json={"reason": "no"})
    assert again.status_code == 409 and "already approved by user:alice" in again.json()["reason"]


async def test_an_operator_flips_switches_as_themselves_but_cannot_approve(
    harness: Harness, http: httpx.AsyncClient
):
    switch = {"scope": "topic", "target": "actions.decided", "engaged": True, "reason": "incident 42"}
    done = await http.post("/api/switches", headers=CAROL, json=switch)
    assert done.status_code == 200, done.text
    [event] = harness.published
    assert isinstance(event, ControlSwitchV1)
    assert event.payload.model_dump() == {
        "scope": "topic",
        "target": "agentbus.actions.decided.v1",
        "engaged": True,
        "reason": "incident 42",
        "actor": "user:carol",
    }
    refused = await http.post("/api/approvals/AP-0123456789/approve", headers=CAROL, json={})
    assert refused.status_code == 403 and "console role approver" in refused.json()["reason"]


async def test_bad_input_says_what_to_fix(http: httpx.AsyncClient):
    bad = await http.post(
        "/api/switches", headers=CAROL, json={"scope": "topic", "target": "x", "engaged": True}
    )
    assert bad.status_code == 400 and "reason: Field required" in bad.json()["reason"]
    unknown = {"scope": "topic", "target": "nope", "engaged": True, "reason": "r"}
    bad = await http.post("/api/switches", headers=CAROL, json=unknown)
    assert bad.status_code == 400 and bad.json()["reason"].startswith("unknown topic 'nope': use one of")
    bad = await http.get("/api/kpis?window=forever", headers=BOB)
    assert bad.status_code == 400 and "use one of 5m, 15m, 1h, 6h, 24h" in bad.json()["reason"]
    bad = await http.post("/api/approvals/AP-0123456789/reject", headers=ALICE, json={"reason": " "})
    assert bad.status_code == 400 and "a rejection needs a reason" in bad.json()["reason"]


async def test_who_is_asking(http: httpx.AsyncClient):
    missing = await http.get("/api/tickets")
    assert missing.status_code == 401 and "sign in" in missing.json()["reason"]
    unknown = await http.get("/api/tickets", headers={"Authorization": "Bearer mallory-token"})
    assert unknown.status_code == 401
    signed = await http.post("/api/session", json={"token": "bob-demo-token"})
    assert signed.status_code == 200 and signed.json() == {"id": "user:bob", "roles": ["viewer"]}
    # The session cookie stands in for the header (the page's EventSource cannot send headers).
    assert (await http.get("/api/me")).json()["id"] == "user:bob"
    assert (await http.get("/healthz")).json()["ok"] is True


async def test_timeline_and_kpis(harness: Harness, http: httpx.AsyncClient):
    harness.view.add_raw(dumps(builders.event(TaskFinishedV2)))
    ticket = (await http.get("/api/tickets/T-1", headers=BOB)).json()
    assert ticket["status"] == "resolved"
    decided = next(s for s in ticket["steps"] if s["type"] == "action.decided")
    assert decided["rule_ids"] == ["refund.needs_approval"] and decided["verdict"] == "needs_approval"
    assert decided["reason"] == "Needs approval under §3.2" and decided["latency_ms"] is None
    missing = await http.get("/api/tickets/T-NOPE", headers=BOB)
    assert missing.status_code == 404

    kpis = (await http.get("/api/kpis?window=15m", headers=BOB)).json()
    figures = kpis["figures"]
    assert (figures["received"], figures["finished"], figures["resolved"], figures["automated"]) == (
        1,
        1,
        1,
        0,
    )
    assert figures["automation_rate"] == 0.0 and len(kpis["series"]) == 12


async def test_the_stream_sends_everything_then_only_what_changed(harness: Harness):
    changes = live.Changes()
    engaged: list[dict[str, Any]] = []
    stream = live.stream(harness.view, changes, lambda: list(engaged), lambda: {"figures": "…"})
    first = [await anext(stream) for _ in range(4)]
    assert [m["event"] for m in first] == ["tickets", "deadletters", "switches", "kpis"]
    assert '"ticket_id":"T-1"' in first[0]["data"]

    harness.view.add_raw(dumps(builders.event(TicketReceivedV1, ticket_id="T-2")))
    engaged.append({"scope": "global", "target": "all"})
    changes.notify()
    update = [await anext(stream) for _ in range(3)]
    assert [m["event"] for m in update] == ["tickets", "switches", "kpis"]
    assert '"ticket_id":"T-2"' in update[0]["data"] and "T-1" not in update[0]["data"]
    await stream.aclose()
