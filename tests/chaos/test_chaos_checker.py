"""The history checker on small hand-made histories (no broker): each rule it enforces is broken once
and named, and a clean history passes. The chaos runs show it on real ones."""

from __future__ import annotations

from itertools import count
from typing import Any

import orjson
import pytest
from chaos.faults import Malformed
from chaos.harness import Published
from chaos.history import Rec, Recorded, check

PREFIX = "p."
_ids = count(1)
_offsets: dict[tuple[str, int], int] = {}


def event(kind: str, ticket: str, cause: str | None, at: int, **payload: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{next(_ids)}",
        "type": kind,
        "ticket_id": ticket,
        "causation_id": cause,
        "occurred_at": f"2026-11-22T00:00:{at:02d}Z",
        "payload": payload,
    }


def rec(topic: str, ev: dict[str, Any] | None, key: str = "T-1", partition: int = 0, raw: bytes = b"") -> Rec:
    offset = _offsets[(topic, partition)] = _offsets.get((topic, partition), -1) + 1
    return Rec(topic, partition, offset, key, raw or orjson.dumps(ev), ev)


def history(records: list[Rec], *, audit: set[str] | None = None, committed: Any = None) -> Recorded:
    return Recorded(
        records=records,
        audit_ids={r.event["event_id"] for r in records if r.event} if audit is None else audit,
        audit_rows=0,
        chain_ok=True,
        chain_problem="",
        ledger=[],
        refunds_per_order={},
        committed=committed or {},
        prefix=PREFIX,
    )


def resolved_ticket(ticket: str = "T-1") -> list[Rec]:
    received = event("ticket.received", ticket, None, 1)
    executed = event(
        "action.executed",
        ticket,
        received["event_id"],
        2,
        idempotency_key=f"k-{ticket}",
        status="succeeded",
        duplicate=False,
    )
    finished = event("task.finished", ticket, executed["event_id"], 3, outcome="resolved")
    return [
        rec("agentbus.tickets.received.v1", received, ticket),
        rec("agentbus.actions.executed.v1", executed, ticket),
        rec("agentbus.tasks.finished.v1", finished, ticket),
    ]


PUBLISHED = {"T-1": Published("T-1", "resolved", 0, 0, 0.0)}


def violations(recorded: Recorded, malformed: list[Malformed] | None = None) -> dict[str, list[str]]:
    return {
        k: v
        for k, v in check(recorded, PUBLISHED, malformed or [], min_completed=0.9).violations.items()
        if v
    }


def test_a_clean_history_passes():
    assert violations(history(resolved_ticket())) == {}


def test_the_same_record_twice_is_absorbed_but_a_second_execution_is_a_duplicate_effect():
    records = resolved_ticket()
    executed = records[1]
    assert violations(history([*records, rec(executed.topic, executed.event)])) == {}
    again = dict(executed.event or {}, payload={**(executed.event or {})["payload"], "duration_ms": 9})
    found = violations(history([*records, rec(executed.topic, again)]))
    assert list(found) == ["duplicate_effect"] and "k-T-1 executed 2 times" in found["duplicate_effect"][0]


def test_an_event_on_the_broker_but_not_in_the_audit_store_is_lost():
    records = resolved_ticket()
    found = violations(history(records, audit={r.event["event_id"] for r in records[:2] if r.event}))
    assert list(found) == ["lost_from_audit"] and "task.finished" in found["lost_from_audit"][0]


def test_two_final_states_and_no_final_state_are_both_violations():
    records = resolved_ticket()
    other = event("task.finished", "T-1", records[0].event["event_id"], 4, outcome="escalated")  # type: ignore[index]
    found = violations(history([*records, rec("agentbus.tasks.finished.v1", other)]))
    assert "T-1 finished 2 times" in found["final_state"][0]
    assert "completed" in found  # and it no longer counts as completed


def test_an_event_committed_by_its_stage_with_no_answer_is_a_lost_event():
    records = resolved_ticket()[:1]  # received, and then nothing
    group = f"{PREFIX}agentbus.intake.agentbus.tickets.received.v1"
    position = ("agentbus.tickets.received.v1", 0)
    found = violations(history(records, committed={group: {position: records[0].offset + 1}}))
    assert f"was committed by {group} but nothing answers it" in found["lost_event"][0]
    # Not yet consumed: stuck, not lost.
    found = violations(history(records, committed={group: {position: records[0].offset}}))
    assert "lost_event" not in found and "not yet consumed by intake" in found["final_state"][0]


def test_an_effect_before_its_cause_is_out_of_order():
    records = resolved_ticket()
    late = dict(records[0].event or {}, occurred_at="2026-11-22T00:00:09Z")
    found = violations(history([rec(records[0].topic, late), *records[1:]]))
    assert any("occurred before its cause" in m for m in found["order"])


@pytest.mark.parametrize("dead_lettered", [True, False])
def test_a_malformed_record_must_be_dead_lettered_with_a_reason(dead_lettered):
    records = resolved_ticket()
    bad = rec("agentbus.tickets.received.v1", None, key="BAD-1", raw=b"{oops")
    malformed = [Malformed(PREFIX + bad.topic, bad.partition, bad.offset, "BAD-1", "not_json")]
    dead = event(
        "deadletter.recorded",
        "BAD-1",
        None,
        5,
        source_topic=PREFIX + bad.topic,
        partition=bad.partition,
        offset=bad.offset,
        reason="not JSON",
        error_type="malformed",
    )
    extra = [rec("agentbus.deadletter.v1", dead, key="BAD-1")] if dead_lettered else []
    found = violations(history([*records, bad, *extra]), malformed)
    assert found == ({} if dead_lettered else {"dead_letter": [found.get("dead_letter", [""])[0]]})
    if not dead_lettered:
        assert "not_json record BAD-1" in found["dead_letter"][0]


def test_a_run_where_nothing_completed_cannot_pass():
    found = violations(history([]))
    assert "only 0 of 1 tickets" in found["completed"][0]
