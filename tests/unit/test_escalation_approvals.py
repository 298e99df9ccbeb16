"""Approvals in the escalation service, without I/O: identities and tokens, who may decide, what a
decision or an expiry publishes, and the OpenAPI document the API serves."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentbus.escalation import approvals
from agentbus.escalation.api import create_api
from agentbus.escalation.desk import ApprovalDesk
from agentbus.escalation.openapi import SPEC
from agentbus.shared.events import Event
from agentbus.shared.identities import Identities, Identity, IdentityError, bearer_token
from agentbus.shared.topics import SERVICE_TOPICS, TOPIC_FOR_TYPE
from builders import PRODUCER, approval_row, needs_approval
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from starlette.routing import Route

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
ALICE = Identity("user:alice", frozenset({"refund-approver", "it-approver", "approver"}))
BOB = Identity("user:bob", frozenset({"viewer"}))


DECISION = needs_approval(step=7, traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def row(**overrides: Any) -> dict[str, Any]:
    return approval_row(DECISION, NOW, **overrides)


# --- identities ---------------------------------------------------------------------------------


def test_the_demo_identities_file_loads() -> None:
    ids = Identities.load(REPO / "policies" / "identities.toml")
    assert ids.authenticate("alice-demo-token") == ALICE
    assert ids.authenticate("bob-demo-token") == BOB
    assert ids.authenticate("mallory") is None
    assert ids.authenticate(None) is None


def test_a_token_can_be_given_by_its_sha256_only() -> None:
    digest = hashlib.sha256(b"s3cret-token").hexdigest()
    ids = Identities.parse(f'[[identities]]\nid = "user:carol"\ntoken_sha256 = "{digest}"\nroles = ["x"]\n')
    assert ids.authenticate("s3cret-token") == Identity("user:carol", frozenset({"x"}))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[identities]]\nid = "user:a"\nroles = []\n', "exactly one of token or token_sha256"),
        ('[[identities]]\nid = "alice"\ntoken = "long-enough"\n', "id"),
        (
            '[[identities]]\nid = "user:a"\ntoken = "same-token"\n'
            '[[identities]]\nid = "user:b"\ntoken = "same-token"\n',
            "user:b reuses the token of user:a",
        ),
        ('[[identities]]\nid = "user:a"\ntoken = "long-enough"\nrole = "x"\n', "role"),
        ("[[identities]\n", "not valid TOML"),
    ],
)
def test_a_broken_identities_file_is_refused_with_the_reason(text: str, needle: str) -> None:
    with pytest.raises(IdentityError, match=r"^ids\.toml: ") as err:
        Identities.parse(text, "ids.toml")
    assert needle in str(err.value)


def test_a_missing_identities_file_lets_nobody_in(tmp_path: Path) -> None:
    ids = Identities.load(tmp_path / "nope.toml")
    assert len(ids) == 0 and ids.authenticate("alice-demo-token") is None


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), (None, None)],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


# --- who may decide, and what a decision publishes ---------------------------------------------


def test_only_the_required_role_may_decide_and_the_refusal_says_why() -> None:
    assert approvals.refusal(ALICE, row(), "approve") is None
    why = approvals.refusal(BOB, row(), "approve")
    assert why == "to approve AP-0123456789 you need role refund-approver; user:bob has roles: viewer"


def test_a_decided_or_overdue_approval_is_not_pending() -> None:
    assert approvals.not_pending(row(), NOW) is None
    overdue = approvals.not_pending(row(), NOW + timedelta(hours=2))
    assert overdue and "expired at 2025-01-02T04:04:05+00:00" in overdue
    done = row(status="approved", approver="user:alice", decided_at=NOW)
    assert approvals.not_pending(done, NOW) == (
        "approval AP-0123456789 is already approved by user:alice at 2025-01-02T03:04:05+00:00"
    )


def test_a_decision_answers_the_needs_approval_decision() -> None:
    source = DECISION
    event = approvals.decided_event(row(), approved=True, identity=ALICE, reason="ok", producer=PRODUCER)
    assert (event.ticket_id, event.tenant_id, event.causation_id, event.step) == (
        "T-1",
        "acme",
        source.event_id,
        8,
    )
    assert event.traceparent == source.traceparent
    assert event.payload.proposal == source.payload.proposal
    assert (event.payload.approved, event.payload.approver, event.payload.role) == (
        True,
        "user:alice",
        "refund-approver",
    )
    rejected = approvals.decided_event(row(), approved=False, identity=ALICE, reason="no", producer=PRODUCER)
    assert not rejected.payload.approved and rejected.payload.reason == "no"


def test_an_approval_without_its_stored_decision_still_names_its_ticket() -> None:
    event = approvals.decided_event(
        row(decision_event=None), approved=True, identity=ALICE, reason="", producer=PRODUCER
    )
    assert (event.ticket_id, event.tenant_id, event.causation_id) == ("T-1", "acme", None)


def test_an_expiry_escalates_the_ticket_with_the_change_that_was_never_made() -> None:
    source = DECISION
    event = approvals.expired_event(row(), producer=PRODUCER)
    assert event.causation_id == source.event_id and event.step == 8
    request = event.payload
    assert request.reason == "approval_expired"
    assert request.rule_ids == ["refund.needs_approval"]
    assert "refund-approver" in request.summary and "amount_cents = 4000" in request.summary
    assert request.details["approval_id"] == "AP-0123456789"


def test_every_event_the_desk_publishes_goes_to_a_topic_escalation_may_write() -> None:
    # The bus refuses a topic outside the service's grants; an expiry once went nowhere because of it.
    produced = SERVICE_TOPICS["escalation"][1]
    events = [
        approvals.decided_event(row(), approved=True, identity=ALICE, reason="ok", producer=PRODUCER),
        approvals.decided_event(row(), approved=False, identity=ALICE, reason="no", producer=PRODUCER),
        approvals.expired_event(row(), producer=PRODUCER),
    ]
    assert [TOPIC_FOR_TYPE[e.type] in produced for e in events] == [True, True, True]


def test_the_outcome_event_round_trips_through_its_row() -> None:
    event = approvals.expired_event(row(), producer=PRODUCER)
    stored = row(status="expired", outcome_event=event.model_dump(mode="json"))
    assert approvals.outcome(stored) == event


def test_the_view_shows_the_exact_change_and_matches_the_documented_schema() -> None:
    schema = Draft202012Validator({**SPEC, "$ref": "#/components/schemas/Approval"})
    pending = approvals.view(row())
    schema.validate(pending)
    assert pending["args"] == {"order_id": "ORD-1002", "amount_cents": 4000, "currency": "USD"}
    assert pending["rule_ids"] == ["refund.needs_approval"] and pending["published"] is None
    decided = approvals.view(row(status="rejected", approver="user:alice", decided_at=NOW, published=True))
    schema.validate(decided)
    assert decided["decided_at"] == "2025-01-02T03:04:05+00:00" and decided["published"] is True


# --- the OpenAPI document -------------------------------------------------------------------------


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1")
    validate(SPEC)


def test_the_validator_would_catch_a_broken_document() -> None:
    broken = copy.deepcopy(SPEC)
    broken["paths"]["/approvals"]["get"]["parameters"][0]["in"] = "body"
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


async def _publish(event: Event) -> None:
    raise AssertionError("nothing is published without a store")


async def test_every_route_is_documented_and_the_document_is_served() -> None:
    api = create_api(ApprovalDesk(_publish, PRODUCER), Identities({}))
    served = {
        (route.path, method.lower())
        for route in api.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, ops in SPEC["paths"].items() for method in ops}
    assert served == documented
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api") as http:
        assert (await http.get("/openapi.json")).json() == SPEC
        refused = await http.get("/approvals")
        assert refused.status_code == 401 and "missing bearer token" in refused.json()["reason"]
        assert refused.headers["www-authenticate"].startswith("Bearer")
        unknown = await http.post("/approvals/AP-1/approve", headers={"Authorization": "Bearer nope-nope"})
        assert unknown.status_code == 401 and "unknown token" in unknown.json()["reason"]
