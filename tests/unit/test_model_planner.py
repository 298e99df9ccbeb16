"""Model planner logic with a scripted client: validation before anything leaves the planner,
bounded re-asks, escalation on failure, routing and cost records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import builders
import orjson
import pytest
from agentbus.planner.model import ModelPlanner
from agentbus.planner.workflows import TaskState
from agentbus.shared.events import Decision, TaskClassified, TaskClassifiedV2, Verification
from agentbus.shared.llm import Completion, ModelsConfig, ModelUnavailable
from fakes import ScriptedClient

REPO = Path(__file__).resolve().parents[2]
CONFIG = ModelsConfig.model_validate(
    {
        "endpoints": {"local": {"base_url": "http://127.0.0.1:9/v1"}},
        "prices": {
            "large": {"input_usd_per_mtok": 2, "output_usd_per_mtok": 8},
            "small": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 1},
        },
        "workflows": {
            "refunds": {"endpoint": "local", "plan_model": "large", "draft_model": "small", "max_reasks": 1}
        },
    }
)


def call(tool: str, args: Any, content: str | None = None, call_id: str = "call-1") -> Completion:
    raw = args if isinstance(args, str) else orjson.dumps(args).decode()
    name = tool.replace(".", "__")
    message = {
        "role": "assistant",
        "content": content,
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}],
    }
    return Completion(message, content, [(call_id, name, raw)], prompt_tokens=100, completion_tokens=10)


def text(content: str) -> Completion:
    return Completion({"role": "assistant", "content": content}, content, [], 50, 5)


def planner(replies: list[Any]) -> tuple[ModelPlanner, ScriptedClient]:
    client = ScriptedClient(replies)
    return (
        ModelPlanner(
            CONFIG,
            prompts_dir=REPO / "prompts",
            policies_dir=REPO / "policies",
            clients={"local": client},  # type: ignore[dict-item]
        ),
        client,
    )


def task(**overrides: Any) -> TaskClassified:
    base = builders.payloads()[TaskClassifiedV2]
    return base.model_copy(update={"body": "Please refund ORD-1001, it arrived broken.", **overrides})


def verified(state: TaskState, tool: str, result: dict[str, Any]) -> Verification:
    assert state.pending_action_id
    return Verification(action_id=state.pending_action_id, tool=tool, verified=True, check="c", result=result)


GET_ORDER = {"order_id": "ORD-1001", "customer_id": "C-1"}


async def test_a_valid_call_becomes_a_proposal_with_route_prompt_sources_and_cost() -> None:
    p, client = planner([call("orders.get_order", GET_ORDER, content="Check the order first.")])
    t = await p.start("T-1", "acme", task())
    assert t is not None and t.proposal is not None
    assert (t.proposal.tool, t.proposal.args, t.proposal.agent) == (
        "orders.get_order",
        GET_ORDER,
        "agent:refunds",
    )
    assert t.proposal.rationale == "Check the order first."
    [plan] = t.proposal.context["model_calls"]  # type: ignore[misc]
    assert plan["purpose"] == "plan" and plan["model"] == "large"  # type: ignore[index]
    assert plan["prompt_version"].startswith("plan@")  # type: ignore[index]
    refund_sections = {s.id for s in p.library.index("refunds").sections}
    assert plan["sources"] and set(plan["sources"]) <= refund_sections  # type: ignore[index]
    # 100 * 2 + 10 * 8 = 280 µ$, in the units policy limits use.
    assert t.proposal.context["usage"] == {"model_calls": 1, "tokens": 110, "spend_microdollars": 280}
    # The ticket text reached the model only inside a data fence, the ids outside it.
    model, messages, tools = client.sent[0]
    assert model == "large" and tools and {f["function"]["name"] for f in tools} >= {"payments__issue_refund"}
    assert "<<<DATA source=ticket>>>" in messages[1]["content"] and "T-1" in messages[1]["content"]


@pytest.mark.parametrize(
    "bad",
    [
        call("orders.get_order", '{"order_id": '),
        call("orders.get_order", {"order_id": "ORD-1001"}),
        call("orders.get_order", {**GET_ORDER, "note": "x"}),
        call("orders.cancel_everything", GET_ORDER),
        call("orders.get_order", {**GET_ORDER, "customer_id": "C-1\x00"}),
    ],
    ids=["not_json", "missing_field", "extra_field", "unknown_tool", "nul_character"],
)
async def test_an_invalid_call_is_re_asked_with_the_reason_then_accepted(bad: Completion) -> None:
    p, client = planner([bad, call("orders.get_order", GET_ORDER, call_id="call-2")])
    t = await p.start("T-1", "acme", task())
    assert t is not None and t.proposal is not None and t.proposal.args == GET_ORDER
    assert t.proposal.context["model_calls"][0]["reasks"] == 1  # type: ignore[index]
    re_ask = client.sent[1][1]
    assert re_ask[-1]["role"] == "tool" and re_ask[-1]["content"].startswith("Rejected: ")
    # Both attempts are paid for.
    assert t.proposal.context["usage"]["model_calls"] == 2  # type: ignore[index]


async def test_invalid_calls_beyond_the_bound_escalate_and_propose_nothing() -> None:
    p, client = planner([call("orders.get_order", "[]"), call("orders.get_order", "{")])
    t = await p.start("T-1", "acme", task())
    assert t is not None and t.proposal is None and t.escalation is not None
    assert t.escalation.reason == "model_failed" and t.escalation.rule_ids == [
        "planner.model.invalid_tool_call"
    ]
    assert t.escalation.usage.model_calls == 2 and t.state.state == "escalated"
    assert len(client.sent) == 2


async def test_an_unavailable_model_escalates_with_the_kind() -> None:
    p, _ = planner([ModelUnavailable("timeout", "no answer within 1s")])
    t = await p.start("T-1", "acme", task())
    assert t is not None and t.escalation is not None
    assert t.escalation.rule_ids == ["planner.model.timeout"] and "timeout" in t.escalation.summary


async def test_a_registered_tool_outside_the_workflow_still_goes_to_policy() -> None:
    # Policy refuses it on the record (tool.not_allowed); the planner does not hide the attempt.
    args = {"user_id": "U-100", "group_id": "grp-prod-admin"}
    p, _ = planner([call("directory.add_to_group", args)])
    t = await p.start("T-1", "acme", task())
    assert t is not None and t.proposal is not None
    assert (t.proposal.tool, t.proposal.args, t.proposal.agent) == (
        "directory.add_to_group",
        args,
        "agent:refunds",
    )


async def test_results_feed_the_next_turn_and_closing_resolves_without_another_call() -> None:
    p, client = planner(
        [
            call("orders.get_order", GET_ORDER, call_id="c1"),
            call("helpdesk.reply_to_customer", {"ticket_id": "T-1", "body": "plan text"}, call_id="c2"),
            text("Hello, your refund is done."),  # the small model drafts the reply
            call("helpdesk.close_ticket", {"ticket_id": "T-1", "resolution": "refunded"}, call_id="c3"),
        ]
    )
    t = await p.start("T-1", "acme", task())
    assert t is not None
    t = await p.on_verified(
        t.state, verified(t.state, "orders.get_order", {"found": True, "amount_cents": 2000})
    )
    assert t is not None and t.proposal is not None
    assert t.proposal.args["body"] == "Hello, your refund is done."
    assert [c["purpose"] for c in t.proposal.context["model_calls"]] == ["plan", "draft"]  # type: ignore[union-attr,index]
    # The second plan request carried the first call and its fenced result.
    second = client.sent[1][1]
    assert second[-2]["tool_calls"][0]["id"] == "c1"
    assert second[-1]["role"] == "tool" and "<<<DATA source=tool:orders.get_order>>>" in second[-1]["content"]
    assert client.sent[2][0] == "small" and client.sent[2][2] is None
    t = await p.on_verified(t.state, verified(t.state, "helpdesk.reply_to_customer", {"reply_id": "R-1"}))
    assert t is not None and t.proposal is not None and t.proposal.tool == "helpdesk.close_ticket"
    t = await p.on_verified(t.state, verified(t.state, "helpdesk.close_ticket", {"status": "closed"}))
    assert t is not None and t.finished is not None and t.finished.outcome == "resolved"
    assert t.finished.usage.model_calls == 4 and len(client.sent) == 4


async def test_a_model_that_stops_early_escalates() -> None:
    p, _ = planner([text("I cannot help with this.")])
    t = await p.start("T-1", "acme", task())
    assert t is not None and t.escalation is not None
    assert t.escalation.rule_ids == ["planner.model.ended"] and "I cannot help" in t.escalation.summary


async def test_a_denied_proposal_escalates_and_other_workflows_use_the_deterministic_planner() -> None:
    p, client = planner(
        [call("payments.issue_refund", {"order_id": "ORD-1001", "amount_cents": 99900, "currency": "USD"})]
    )
    t = await p.start("T-1", "acme", task())
    assert t is not None and t.proposal is not None
    decision = Decision(
        proposal=t.proposal, verdict="deny", rule_ids=["refund.above_approval_limit"], reason="§3.3"
    )
    d = await p.on_denied(t.state, decision)
    assert d is not None and d.escalation is not None and d.escalation.reason == "policy_denied"
    access = task(workflow="it_access", intent="password_reset", order_id=None, facts={"user_id": "U-100"})
    deterministic = await p.start("T-2", "acme", access)
    assert deterministic is not None and deterministic.proposal is not None
    assert deterministic.proposal.tool == "directory.get_user" and len(client.sent) == 1


def test_without_a_models_file_the_service_plans_deterministically(tmp_path: Path) -> None:
    from agentbus.planner.app import make_planner
    from agentbus.planner.workflows import WorkflowPlanner
    from agentbus.shared.settings import Settings

    assert isinstance(make_planner(Settings(service="planner")), WorkflowPlanner)
    models = tmp_path / "models.toml"
    models.write_text((REPO / "models.example.toml").read_text())
    configured = make_planner(
        Settings(
            service="planner",
            models_file=models,
            prompts_dir=REPO / "prompts",
            policies_dir=REPO / "policies",
        )
    )
    assert isinstance(configured, ModelPlanner)
    assert set(configured.config.workflows) == {"refunds", "it_access"}
