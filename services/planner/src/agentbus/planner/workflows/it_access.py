"""The IT access contract (password resets, group grants) as a deterministic state machine.

Pure functions over `TaskState`; no transport, no database. The planner proposes; policy decides
(a reset, a non-admin grant, an admin grant that needs an approver): each proposal carries the facts
policy needs in its args and context.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agentbus.shared.events import Decision, TaskClassified, Verification

from .base import (
    TaskState,
    Transition,
    awaits,
    denied,
    new_task,
    not_eligible,
    propose,
    resolved,
    stopped_by_verifier,
)

AGENT = "agent:it-access"
WORKFLOW = "it_access"

# One contract per intent. The directory read comes first and is the only check before the write:
# nothing is written for a user who is unknown, disabled or in another tenant.
STEPS: dict[str, tuple[tuple[str, str], ...]] = {
    "password_reset": (
        ("verify_user", "directory.get_user"),
        ("send_reset", "directory.send_password_reset"),
        ("reply", "helpdesk.reply_to_customer"),
        ("close", "helpdesk.close_ticket"),
    ),
    "group_access": (
        ("verify_user", "directory.get_user"),
        ("grant_group", "directory.add_to_group"),
        ("reply", "helpdesk.reply_to_customer"),
        ("close", "helpdesk.close_ticket"),
    ),
}

RULE_USER_EXISTS = "workflow.it_access.user_must_exist"
RULE_SAME_TENANT = "workflow.it_access.same_tenant"
RULE_USER_ACTIVE = "workflow.it_access.user_must_be_active"
RULE_GROUP_EXISTS = "workflow.it_access.group_must_exist"

# Facts learnt from the directory that go into every later proposal's context, for policy.
_DIRECTORY_FACTS = ("user_status", "user_tenant", "group_found", "group_admin", "group_tenant")


def steps_of(state: TaskState) -> tuple[tuple[str, str], ...]:
    return STEPS[state.context["intent"]]


def start(
    ticket_id: str,
    tenant_id: str,
    intent: str,
    user_id: str,
    group_id: str | None,
    language: str = "en",
) -> Transition | None:
    """The first proposal, or None for an intent this workflow has no contract for (or a group
    request without a group, which intake already sends to a human)."""
    if intent not in STEPS or (intent == "group_access" and not group_id):
        return None
    context: dict[str, Any] = {"intent": intent, "user_id": user_id, "language": language}
    if intent == "group_access":
        context["group_id"] = group_id
    return _propose(new_task(ticket_id, tenant_id, WORKFLOW, context))


def _propose(state: TaskState) -> Transition:
    name, tool = steps_of(state)[state.step]
    ctx = state.context
    user_id, group_id = ctx["user_id"], ctx.get("group_id")
    args: dict[str, Any]
    if name == "verify_user":
        args = {"user_id": user_id}
        why = "Check the user exists, is active and belongs to this tenant."
        if group_id is not None:
            args["group_id"] = group_id
            why = "Check the user exists, is active and belongs to this tenant, and look up the group."
    elif name == "send_reset":
        args = {"user_id": user_id}
        why = "Send a password reset link to the user's address on file."
    elif name == "grant_group":
        args = {"user_id": user_id, "group_id": group_id}
        kind = "admin group" if ctx.get("group_admin") else "group"
        why = f"Add the user to the {kind} {group_id} they asked for."
    elif name == "reply":
        args = {"ticket_id": state.ticket_id, "body": reply_text(state)}
        why = "Tell the requester what was done."
    else:
        args = {"ticket_id": state.ticket_id, "resolution": _resolution(ctx)}
        why = "Close the ticket as resolved."
    context: dict[str, Any] = {
        "step": name,
        "intent": ctx["intent"],
        "user_id": user_id,
        "ticket_tenant": state.tenant_id,
    }
    if group_id is not None:
        context["group_id"] = group_id
    context.update({k: ctx[k] for k in _DIRECTORY_FACTS if k in ctx})
    if "already_member" in ctx:
        context["already_member"] = ctx["already_member"]
    return propose(state, agent=AGENT, tool=tool, args=args, rationale=why, context=context)


def _resolution(ctx: dict[str, Any]) -> str:
    """The helpdesk's resolution code (the it_access policy bundle lists the allowed ones)."""
    if ctx["intent"] == "password_reset":
        return "password_reset"
    return "answered" if ctx.get("already_member") else "access_granted"


def reply_text(state: TaskState) -> str:
    ctx = state.context
    user_id = ctx["user_id"]
    if ctx["intent"] == "password_reset":
        return (
            f"Hello, we have sent a password reset link for your account {user_id} to the email "
            f"address on file ({ctx['reset_sent_to']}). The link expires at {ctx['reset_expires_at']} "
            f"(reference {ctx['reset_link_id']}). If you did not ask for this, please tell us."
        )
    if ctx.get("already_member"):
        return (
            f"Hello, your account {user_id} is already a member of {ctx['group_id']}, so nothing "
            f"needed to change. If the access still does not work, please reply to this ticket."
        )
    return (
        f"Hello, your account {user_id} has been added to the group {ctx['group_id']}. "
        f"The access may take a few minutes to apply."
    )


def on_verified(state: TaskState, verification: Verification) -> Transition | None:
    """Advance after a verified action; None when the event is not for the pending action."""
    if not awaits(state, verification.action_id):
        return None
    if not verification.verified:
        return stopped_by_verifier(state)
    steps = steps_of(state)
    name, _ = steps[state.step]
    ctx = dict(state.context)
    result = verification.result
    next_step = state.step + 1
    if name == "verify_user":
        problem = _ineligibility(state, result)
        if problem is not None:
            summary, rule_id = problem
            return not_eligible(state, ctx, summary, _ineligibility_details(ctx, result), rule_id)
        ctx.update(user_status=result["status"], user_tenant=result["tenant_id"])
        if ctx["intent"] == "group_access":
            groups = result.get("groups")
            ctx.update(
                group_found=True,
                # Fail closed: anything but an explicit False counts as an admin group.
                group_admin=result.get("group_admin") is not False,
                group_tenant=result.get("group_tenant"),
                already_member=isinstance(groups, list) and ctx["group_id"] in groups,
            )
            if ctx["already_member"]:
                # Nothing to grant: no write is proposed, the requester is told so.
                next_step = [n for n, _ in steps].index("reply")
    elif name == "send_reset":
        ctx.update(
            reset_link_id=result["link_id"],
            reset_expires_at=result["expires_at"],
            reset_sent_to=result["sent_to"],
        )
    elif name == "grant_group":
        ctx["granted"] = not result.get("already_member", False)
    elif name == "reply":
        ctx["reply_id"] = result["reply_id"]
    done = [*ctx.get("done", []), verification.action_id]
    ctx["done"] = done
    if next_step == len(steps):
        return resolved(state, ctx, summary=_summary(ctx), done=done)
    return _propose(replace(state, step=next_step, context=ctx))


def _summary(ctx: dict[str, Any]) -> str:
    user_id = ctx["user_id"]
    if ctx["intent"] == "password_reset":
        return (
            f"Password reset link {ctx['reset_link_id']} sent for user {user_id} (expires "
            f"{ctx['reset_expires_at']}), requester told, ticket closed."
        )
    if ctx.get("already_member"):
        return (
            f"User {user_id} was already a member of {ctx['group_id']}: nothing granted, "
            f"requester told, ticket closed."
        )
    return f"Added user {user_id} to group {ctx['group_id']}, requester told, ticket closed."


def _ineligibility(state: TaskState, user: dict[str, Any]) -> tuple[str, str] | None:
    """(summary, rule id) when the directory says the request cannot be carried out."""
    ctx = state.context
    user_id, what = ctx["user_id"], _request(ctx)
    if not user.get("found"):
        return (
            f"User {user_id} was not found in the directory; the {what} cannot be carried out. "
            f"Check the requester's directory id.",
            RULE_USER_EXISTS,
        )
    if user.get("tenant_id") != state.tenant_id:
        # The other tenant is not named: the handoff is read by this tenant's agents.
        return (
            f"User {user_id} does not belong to tenant {state.tenant_id}; the {what} was refused "
            f"before any change.",
            RULE_SAME_TENANT,
        )
    if user.get("status") != "active":
        return (
            f"User {user_id} is {user.get('status')!r} in the directory, not active; the {what} "
            f"needs an active account. A human should check whether the account should be restored.",
            RULE_USER_ACTIVE,
        )
    if ctx["intent"] == "group_access":
        group_id = ctx["group_id"]
        if not user.get("group_found"):
            return (
                f"Group {group_id} does not exist in the directory; user {user_id} asked for access "
                f"to it. A human should find out which group is meant.",
                RULE_GROUP_EXISTS,
            )
        if user.get("group_tenant") != state.tenant_id:
            return (
                f"Group {group_id} does not belong to tenant {state.tenant_id}; the {what} was "
                f"refused before any change.",
                RULE_SAME_TENANT,
            )
    return None


def _ineligibility_details(ctx: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {
        "intent": ctx["intent"],
        "user_id": ctx["user_id"],
        "user_found": bool(user.get("found")),
        "user_status": user.get("status"),
    }
    if "group_id" in ctx:
        details.update(group_id=ctx["group_id"], group_found=bool(user.get("group_found")))
    return details


def _request(ctx: dict[str, Any]) -> str:
    if ctx["intent"] == "password_reset":
        return f"password reset for user {ctx['user_id']}"
    kind = "admin group" if ctx.get("group_admin") else "group"
    return f"grant of {kind} {ctx['group_id']} to user {ctx['user_id']}"


def on_denied(state: TaskState, decision: Decision) -> Transition | None:
    """A deny of the pending action hands the task to a human with a prefilled summary."""
    if not awaits(state, decision.proposal.action_id):
        return None
    ctx = state.context
    tool = decision.proposal.tool
    what = _request(ctx) if tool in ("directory.send_password_reset", "directory.add_to_group") else tool
    details: dict[str, Any] = {"intent": ctx["intent"], "user_id": ctx["user_id"]}
    if "group_id" in ctx:
        details.update(group_id=ctx["group_id"], group_admin=ctx.get("group_admin"))
    return denied(state, decision, what, details)


class ITAccess:
    """The it_access state machine behind the `Planner` interface; the user and group come from
    intake's `facts`."""

    name = WORKFLOW

    def start(self, ticket_id: str, tenant_id: str, task: TaskClassified) -> Transition | None:
        user_id, group_id = task.facts.get("user_id"), task.facts.get("group_id")
        if task.workflow != WORKFLOW or not isinstance(user_id, str) or not user_id:
            return None
        return start(
            ticket_id,
            tenant_id,
            task.intent,
            user_id,
            group_id if isinstance(group_id, str) else None,
            task.language,
        )

    def on_verified(self, state: TaskState, verification: Verification) -> Transition | None:
        return on_verified(state, verification)

    def on_denied(self, state: TaskState, decision: Decision) -> Transition | None:
        return on_denied(state, decision)
