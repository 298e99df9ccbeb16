"""IT access workflow state machine (password reset, group access) and the multi-workflow planner."""

from __future__ import annotations

from typing import Any

import pytest
from agentbus.planner.workflows import Planner, TaskState, Transition, WorkflowPlanner, default_planner
from agentbus.planner.workflows import it_access as wf
from agentbus.shared.events import Decision, TaskClassified, TaskClassifiedV2, Verification
from builders import payloads

TICKET, TENANT, USER = "T-7", "acme", "U-100"


def begin(intent: str = "password_reset", group_id: str | None = None) -> Transition:
    t = wf.start(TICKET, TENANT, intent, USER, group_id)
    assert t is not None
    return t


def verified(state: TaskState, result: dict[str, Any], ok: bool = True) -> Verification:
    assert state.pending_action_id is not None
    return Verification(
        action_id=state.pending_action_id,
        tool=wf.steps_of(state)[state.step][1],
        verified=ok,
        check="test_check",
        result=result,
    )


def user_result(**overrides: Any) -> dict[str, Any]:
    """What executor.tools.get_user returns for an active acme user (with a group looked up when
    `group_id` is given)."""
    data: dict[str, Any] = {
        "found": True,
        "user_id": USER,
        "status": "active",
        "tenant_id": TENANT,
        "manager_id": "U-101",
        "groups": [],
    }
    data.update(overrides)
    return data


def group_result(group_id: str = "grp-analytics", admin: bool = False, **overrides: Any) -> dict[str, Any]:
    data = user_result(group_id=group_id, group_found=True, group_admin=admin, group_tenant=TENANT)
    data.update(overrides)
    return data


RESET = {
    "link_id": "PRL-0A1B2C3D4E",
    "user_id": USER,
    "expires_at": "2030-01-01T12:00:00+00:00",
    "sent_to": "d***@example.com",
}


def step(t: Transition, result: dict[str, Any], ok: bool = True) -> Transition:
    nxt = wf.on_verified(t.state, verified(t.state, result, ok))
    assert nxt is not None
    return nxt


def run(t: Transition, results: list[dict[str, Any]]) -> tuple[Transition, list[str]]:
    """Verify each pending action with the next result; returns the last transition and the tools."""
    tools = []
    for result in results:
        assert t.proposal is not None
        tools.append(t.proposal.tool)
        t = step(t, result)
    return t, tools


def deny(t: Transition, rule: str, reason: str = "because") -> Decision:
    assert t.proposal is not None
    return Decision(proposal=t.proposal, verdict="deny", rule_ids=[rule], reason=reason)


def test_password_reset_starts_with_get_user_as_the_it_access_agent() -> None:
    t = begin()
    p = t.proposal
    assert p is not None
    assert p.tool == "directory.get_user"
    assert p.args == {"user_id": USER}
    assert p.agent == "agent:it-access"
    assert p.workflow == "it_access"
    assert p.action_id == f"act-{TICKET}-0"
    assert p.idempotency_key == f"{TENANT}:{TICKET}:0:directory.get_user"
    assert p.context == {
        "step": "verify_user",
        "intent": "password_reset",
        "user_id": USER,
        "ticket_tenant": TENANT,
    }
    assert t.state.state == "running" and t.state.pending_action_id == p.action_id
    assert t.state.workflow == "it_access"


def test_password_reset_happy_path_resolves() -> None:
    t, tools = run(
        begin(),
        [
            user_result(),
            RESET,
            {"reply_id": "RPL-1", "ticket_id": TICKET},
            {"ticket_id": TICKET, "status": "closed"},
        ],
    )
    assert tools == [
        "directory.get_user",
        "directory.send_password_reset",
        "helpdesk.reply_to_customer",
        "helpdesk.close_ticket",
    ]
    assert t.finished is not None and t.finished.outcome == "resolved"
    assert t.finished.actions == [f"act-{TICKET}-{i}" for i in range(4)]
    assert "PRL-0A1B2C3D4E" in t.finished.summary and USER in t.finished.summary
    assert t.state.state == "resolved" and t.state.pending_action_id is None
    assert t.proposal is None and t.escalation is None


def test_reset_proposal_carries_the_user_facts_for_policy() -> None:
    t = step(begin(), user_result())
    p = t.proposal
    assert p is not None
    assert p.tool == "directory.send_password_reset"
    assert p.args == {"user_id": USER}
    assert p.context["user_status"] == "active"
    assert p.context["user_tenant"] == TENANT
    assert p.context["ticket_tenant"] == TENANT
    assert p.idempotency_key == f"{TENANT}:{TICKET}:1:directory.send_password_reset"


def test_reset_reply_names_reference_expiry_and_masked_address_only() -> None:
    t = step(step(begin(), user_result()), RESET)
    p = t.proposal
    assert p is not None and p.tool == "helpdesk.reply_to_customer"
    body = p.args["body"]
    assert isinstance(body, str)
    for fact in ("PRL-0A1B2C3D4E", "2030-01-01T12:00:00+00:00", "d***@example.com", USER):
        assert fact in body
    assert "dana@example.com" not in body
    close = step(t, {"reply_id": "RPL-1", "ticket_id": TICKET}).proposal
    assert close is not None
    assert close.args == {"ticket_id": TICKET, "resolution": "password_reset"}


def test_group_access_looks_the_group_up_then_grants_with_admin_facts() -> None:
    t = begin("group_access", "grp-prod-admin")
    assert t.proposal is not None
    assert t.proposal.args == {"user_id": USER, "group_id": "grp-prod-admin"}
    assert t.proposal.context["group_id"] == "grp-prod-admin"
    t = step(t, group_result("grp-prod-admin", admin=True))
    p = t.proposal
    assert p is not None
    assert p.tool == "directory.add_to_group"
    assert p.args == {"user_id": USER, "group_id": "grp-prod-admin"}
    assert p.context["group_admin"] is True
    assert p.context["group_tenant"] == TENANT
    assert p.context["user_tenant"] == TENANT
    assert p.context["ticket_tenant"] == TENANT
    assert p.context["already_member"] is False
    assert "admin group" in p.rationale


def test_group_access_happy_path_resolves() -> None:
    t, tools = run(
        begin("group_access", "grp-analytics"),
        [
            group_result(),
            {"user_id": USER, "group_id": "grp-analytics", "already_member": False},
            {"reply_id": "RPL-1", "ticket_id": TICKET},
            {"ticket_id": TICKET, "status": "closed"},
        ],
    )
    assert tools == [
        "directory.get_user",
        "directory.add_to_group",
        "helpdesk.reply_to_customer",
        "helpdesk.close_ticket",
    ]
    assert t.finished is not None and t.finished.outcome == "resolved"
    assert "grp-analytics" in t.finished.summary


@pytest.mark.parametrize(
    ("groups", "grant", "resolution"),
    [
        ([], [{"user_id": USER, "group_id": "grp-wiki", "already_member": False}], "access_granted"),
        (["grp-wiki"], [], "answered"),
    ],
    ids=["granted", "already_member"],
)
def test_group_access_closes_with_the_helpdesk_resolution(
    groups: list[str], grant: list[dict[str, Any]], resolution: str
) -> None:
    t, _ = run(
        begin("group_access", "grp-wiki"),
        [group_result("grp-wiki", groups=groups), *grant, {"reply_id": "RPL-1", "ticket_id": TICKET}],
    )
    assert t.proposal is not None and t.proposal.tool == "helpdesk.close_ticket"
    assert t.proposal.args == {"ticket_id": TICKET, "resolution": resolution}


def test_group_admin_counts_as_admin_unless_the_directory_says_false() -> None:
    t = step(begin("group_access", "grp-analytics"), group_result(group_admin=None))
    assert t.proposal is not None
    assert t.proposal.context["group_admin"] is True


def test_an_existing_member_gets_no_write_only_a_reply() -> None:
    t = step(begin("group_access", "grp-wiki"), group_result("grp-wiki", groups=["grp-wiki"]))
    p = t.proposal
    assert p is not None
    assert p.tool == "helpdesk.reply_to_customer"
    assert p.action_id == f"act-{TICKET}-2"
    assert "already a member" in str(p.args["body"])
    t, tools = run(t, [{"reply_id": "RPL-1", "ticket_id": TICKET}, {"ticket_id": TICKET, "status": "x"}])
    assert tools == ["helpdesk.reply_to_customer", "helpdesk.close_ticket"]
    assert t.finished is not None
    assert "already a member" in t.finished.summary
    assert t.finished.actions == [f"act-{TICKET}-0", f"act-{TICKET}-2", f"act-{TICKET}-3"]


@pytest.mark.parametrize(
    ("intent", "group_id", "result", "rule", "phrase"),
    [
        (
            "password_reset",
            None,
            {"found": False, "user_id": USER},
            "workflow.it_access.user_must_exist",
            "was not found",
        ),
        (
            "password_reset",
            None,
            user_result(status="disabled"),
            "workflow.it_access.user_must_be_active",
            "'disabled'",
        ),
        (
            "password_reset",
            None,
            user_result(tenant_id="globex"),
            "workflow.it_access.same_tenant",
            "does not belong to tenant acme",
        ),
        (
            "group_access",
            "grp-nope",
            user_result(group_id="grp-nope", group_found=False, group_admin=None, group_tenant=None),
            "workflow.it_access.group_must_exist",
            "Group grp-nope does not exist",
        ),
        (
            "group_access",
            "grp-theirs",
            group_result("grp-theirs", group_tenant="globex"),
            "workflow.it_access.same_tenant",
            "Group grp-theirs does not belong to tenant acme",
        ),
        (
            "group_access",
            "grp-wiki",
            user_result(status="disabled", group_id="grp-wiki", group_found=True, group_admin=False),
            "workflow.it_access.user_must_be_active",
            "needs an active account",
        ),
    ],
    ids=[
        "unknown_user",
        "disabled_user",
        "user_other_tenant",
        "unknown_group",
        "group_other_tenant",
        "disabled_user_group",
    ],
)
def test_ineligible_requests_escalate_before_any_write(
    intent: str, group_id: str | None, result: dict[str, Any], rule: str, phrase: str
) -> None:
    t = step(begin(intent, group_id), result)
    assert t.proposal is None and t.finished is None
    esc = t.escalation
    assert esc is not None
    assert esc.reason == "not_eligible"
    assert esc.rule_ids == [rule]
    assert phrase in esc.summary
    assert USER in esc.summary
    assert "globex" not in esc.summary  # the other tenant is not named to this tenant's agents
    assert esc.details["user_id"] == USER
    assert t.state.state == "escalated" and t.state.pending_action_id is None


def test_denied_admin_grant_escalates_naming_group_user_and_rule() -> None:
    t = step(begin("group_access", "grp-prod-admin"), group_result("grp-prod-admin", admin=True))
    nxt = wf.on_denied(t.state, deny(t, "group.admin_denied", "Admin groups need a human"))
    assert nxt is not None
    esc = nxt.escalation
    assert esc is not None
    assert esc.reason == "policy_denied"
    for needle in ("admin group grp-prod-admin", USER, "group.admin_denied", "Admin groups need a human"):
        assert needle in esc.summary
    assert esc.details["group_admin"] is True
    assert esc.details["proposed_action"]["tool"] == "directory.add_to_group"
    assert nxt.state.state == "escalated" and nxt.proposal is None


def test_denied_reset_and_rejected_approval() -> None:
    t = step(begin(), user_result())
    nxt = wf.on_denied(t.state, deny(t, "tool.not_allowed"))
    assert nxt is not None and nxt.escalation is not None
    assert f"password reset for user {USER}" in nxt.escalation.summary
    rejected = wf.on_denied(t.state, deny(t, "approval.rejected", "Rejected by user:alice"))
    assert rejected is not None and rejected.escalation is not None
    assert rejected.escalation.reason == "approval_rejected"


def test_denied_read_names_the_tool() -> None:
    t = begin()
    nxt = wf.on_denied(t.state, deny(t, "agent.mismatch"))
    assert nxt is not None and nxt.escalation is not None
    assert "directory.get_user" in nxt.escalation.summary


def test_stale_and_late_inputs_are_ignored() -> None:
    t = begin()
    stray = Verification(action_id="act-T-7-9", tool="directory.get_user", verified=True, check="x")
    assert wf.on_verified(t.state, stray) is None
    ended = step(t, {"found": False, "user_id": USER})
    assert wf.on_verified(ended.state, verified(t.state, user_result())) is None
    assert wf.on_denied(ended.state, deny(t, "tool.not_allowed")) is None


def test_failed_verification_stops_without_a_new_proposal() -> None:
    t = step(begin(), user_result())
    nxt = step(t, {}, ok=False)
    assert nxt.state.state == "escalated"
    assert nxt.proposal is None and nxt.escalation is None and nxt.finished is None


def test_unknown_intent_or_missing_group_does_not_start() -> None:
    assert wf.start(TICKET, TENANT, "question", USER, None) is None
    assert wf.start(TICKET, TENANT, "group_access", USER, None) is None


def classified(**overrides: Any) -> TaskClassified:
    base = payloads()[TaskClassifiedV2]  # an eligible refund task for ORD-1001
    assert isinstance(base, TaskClassified)
    return base.model_copy(update=overrides)


async def test_workflow_planner_routes_each_task_to_its_workflow() -> None:
    planner: Planner = default_planner()
    refund = await planner.start("T-1", TENANT, classified())
    assert refund is not None and refund.proposal is not None
    assert (refund.state.workflow, refund.proposal.tool) == ("refunds", "orders.get_order")

    access = await planner.start(
        "T-2",
        TENANT,
        classified(
            workflow="it_access",
            intent="group_access",
            order_id=None,
            facts={"user_id": USER, "group_id": "grp-wiki"},
        ),
    )
    assert access is not None and access.proposal is not None
    assert access.proposal.agent == "agent:it-access"
    assert access.proposal.args == {"user_id": USER, "group_id": "grp-wiki"}

    # Later inputs go to the workflow stored with the task.
    nxt = await planner.on_verified(access.state, verified(access.state, group_result("grp-wiki")))
    assert nxt is not None and nxt.proposal is not None
    assert nxt.proposal.tool == "directory.add_to_group"


@pytest.mark.parametrize(
    "overrides",
    [
        {"workflow": None},
        {"workflow": "payroll"},
        {"eligible": False},
        {"workflow": "it_access", "intent": "password_reset", "facts": {}},
        {"workflow": "refunds", "order_id": None},
    ],
    ids=["no_workflow", "unknown_workflow", "not_eligible", "it_access_no_user", "refund_no_order"],
)
async def test_workflow_planner_starts_nothing_it_cannot_handle(overrides: dict[str, Any]) -> None:
    assert await default_planner().start("T-1", TENANT, classified(**overrides)) is None


async def test_workflow_planner_ignores_tasks_of_unknown_workflows() -> None:
    planner = WorkflowPlanner([])
    state = begin().state
    assert await planner.on_verified(state, verified(state, user_result())) is None
