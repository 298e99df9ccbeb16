"""The console on the real stack: a viewer is refused writes, every write is attributed in the audit
store, and the KPIs it shows equal the same figures computed in SQL from audit.events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from agentbus.cli import client
from agentbus.shared.db import connect
from demo_tickets import demo_events

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer alice-demo-token"}  # approver
BOB = {"Authorization": "Bearer bob-demo-token"}  # viewer
CAROL = {"Authorization": "Bearer carol-demo-token"}  # operator

# The KPI definitions of agentbus.shared.kpis, written again in SQL over the audit store.
KPI_SQL = """
WITH received AS (
    SELECT ticket_id, min(occurred_at) AS at FROM audit.events
    WHERE type = 'ticket.received' GROUP BY ticket_id
), covered AS (
    SELECT DISTINCT ticket_id FROM audit.events
    WHERE type = 'task.classified' AND event -> 'payload' ->> 'workflow' IS NOT NULL
), first_finish AS (
    SELECT DISTINCT ON (ticket_id) ticket_id, occurred_at AS at, event -> 'payload' ->> 'outcome' AS outcome,
           COALESCE((event -> 'payload' -> 'usage' ->> 'cost_microdollars')::bigint, 0) AS cost
    FROM audit.events WHERE type = 'task.finished' ORDER BY ticket_id, occurred_at
), human AS (
    SELECT DISTINCT ticket_id FROM audit.events
    WHERE type IN ('approval.decided', 'escalation.requested')
       OR (type = 'action.decided' AND event -> 'payload' ->> 'verdict' = 'needs_approval')
), finished AS (
    SELECT f.*, r.at AS received_at, h.ticket_id IS NOT NULL AS human
    FROM first_finish f LEFT JOIN received r USING (ticket_id) LEFT JOIN human h USING (ticket_id)
    WHERE f.at >= $1 AND f.at < $2
)
SELECT
    (SELECT count(*) FROM received WHERE at >= $1 AND at < $2) AS received,
    (SELECT count(*) FROM received JOIN covered USING (ticket_id) WHERE at >= $1 AND at < $2) AS covered,
    (SELECT count(*) FROM finished) AS finished,
    (SELECT count(*) FROM finished WHERE outcome = 'resolved') AS resolved,
    (SELECT count(*) FROM finished WHERE outcome = 'resolved' AND NOT human) AS automated,
    (SELECT count(*) FROM finished WHERE outcome = 'escalated') AS escalated,
    (SELECT COALESCE(sum(cost), 0) FROM finished) AS cost_microdollars,
    (SELECT count(*) FROM audit.events WHERE type = 'action.verified'
        AND (event -> 'payload' ->> 'verified')::boolean = false
        AND occurred_at >= $1 AND occurred_at < $2) AS verifier_failures,
    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM at - received_at))
        FROM finished WHERE received_at IS NOT NULL) AS latency_p50_s,
    (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM at - received_at))
        FROM finished WHERE received_at IS NOT NULL) AS latency_p95_s
"""


async def sql_kpis(database_url: str, start: datetime, end: datetime) -> dict[str, Any]:
    conn = await connect(database_url)
    try:
        row = dict(await conn.fetchrow(KPI_SQL, start, end))
    finally:
        await conn.close()
    row["cost_microdollars"] = int(row["cost_microdollars"])  # sum(bigint) is numeric
    for name in ("latency_p50_s", "latency_p95_s"):
        row[name] = None if row[name] is None else float(row[name])
    finished, resolved = row["finished"], row["resolved"]
    row["coverage"] = row["covered"] / row["received"] if row["received"] else None
    row["automation_rate"] = row["automated"] / finished if finished else None
    row["escalation_rate"] = row["escalated"] / finished if finished else None
    row["cost_per_resolved_usd"] = row["cost_microdollars"] / resolved / 1e6 if resolved else None
    return row


async def audit_count(database_url: str, sql: str = "SELECT count(*) FROM audit.events") -> int:
    conn = await connect(database_url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def caught_up(http: httpx.AsyncClient, database_url: str, timeout: float = 30) -> None:
    """Until the console has read every event the audit store holds (both count each event once)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        stored = await audit_count(database_url)
        seen = (await http.get("/healthz")).json()["events"]
        if seen == stored:
            return
        assert asyncio.get_running_loop().time() < deadline, f"console saw {seen} of {stored} events"
        await asyncio.sleep(0.2)


async def until(probe: Any, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await probe()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)
    return found


def assert_same(shown: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if isinstance(value, float):
            assert shown[name] == pytest.approx(value, abs=1e-6), name
        else:
            assert shown[name] == value, name


async def test_console_writes_are_attributed_and_its_kpis_match_the_audit_store(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    db = server_database_url
    began = datetime.now(UTC) - timedelta(seconds=1)
    async with start_stack(broker, db, topic_prefix, tmp_path) as stack:
        events, ids = demo_events()
        await client.publish(stack.settings(), events)
        refund_40 = ids["ORD-1002 $40 refund"]
        statuses = await client.wait_for(db, list(ids.values()), timeout=60)
        assert statuses[refund_40] == "awaiting_approval", statuses

        async with httpx.AsyncClient(base_url=stack.console_url, timeout=15) as http:

            async def pending() -> list[dict[str, Any]]:
                found = (await http.get("/api/approvals", headers=BOB)).json()["approvals"]
                return [a for a in found if a["ticket_id"] == refund_40]

            [approval] = await until(pending)

            # A viewer: refused, with the reason, and nothing happens.
            refused = await http.post(f"/api/approvals/{approval['id']}/approve", headers=BOB, json={})
            assert refused.status_code == 403 and "console role approver" in refused.json()["reason"]
            switch = {"scope": "tenant", "target": "tenant-x", "engaged": True, "reason": "drill"}
            refused = await http.post("/api/switches", headers=BOB, json=switch)
            assert refused.status_code == 403 and "console role operator" in refused.json()["reason"]

            # An operator engages and releases a switch; the audit store records who.
            assert (await http.post("/api/switches", headers=CAROL, json=switch)).status_code == 200
            released = {**switch, "engaged": False, "reason": "drill over"}
            assert (await http.post("/api/switches", headers=CAROL, json=released)).status_code == 200

            before_approval = datetime.now(UTC)
            approved = await http.post(
                f"/api/approvals/{approval['id']}/approve", headers=ALICE, json={"reason": "checked"}
            )
            assert approved.status_code == 200, approved.text
            assert approved.json()["approver"] == "user:alice"
            final = await client.wait_for(db, [refund_40], timeout=60, until=frozenset({"resolved"}))
            assert final[refund_40] == "resolved"

            controls = await audit_count(
                db,
                "SELECT count(*) FROM audit.events WHERE type = 'control.switch'"
                " AND event -> 'payload' ->> 'actor' = 'user:carol'",
            )
            assert controls == 2
            approvals = await audit_count(
                db,
                "SELECT count(*) FROM audit.events WHERE type = 'approval.decided'"
                " AND event -> 'payload' ->> 'approver' = 'user:alice'",
            )
            assert approvals == 1

            # KPIs: the whole run, and a window that ends before the approval (the $40 refund
            # finished after it, so it is not in that one).
            await caught_up(http, db)
            end = datetime.now(UTC) + timedelta(seconds=1)
            for start, stop in ((began, end), (began, before_approval)):
                params = {"start": start.isoformat(), "end": stop.isoformat()}
                shown = (await http.get("/api/kpis", params=params, headers=BOB)).json()["figures"]
                expected = await sql_kpis(db, start, stop)
                assert_same(shown, expected)
            whole = await sql_kpis(db, began, end)
            # The demo: 7 readable tickets, 6 routed to a workflow; all finished but the IT grant that
            # waits; the $20 refund and password reset resolved alone, the $40 refund after approval.
            assert (whole["received"], whole["covered"], whole["finished"]) == (7, 6, 6)
            assert (whole["resolved"], whole["automated"], whole["escalated"]) == (3, 2, 3)

            async def lag_measured() -> dict[str, Any]:
                lag = (await http.get("/api/kpis", headers=BOB)).json()["lag"]["latest"]
                return lag if isinstance(lag.get("trace-sink"), int) else {}

            lag = await until(lag_measured)
            assert {"intake", "planner", "policy", "verifier", "escalation", "executor-commerce"} <= set(lag)
