"""The model planner: a configured model picks each next tool call of a task, one at a time, and
every call is validated here before it leaves as a proposal for policy to decide.

Same `Planner` interface as the deterministic planner, which still handles every workflow the
models file does not configure. The conversation is kept in the task state, so each turn sends the
model the whole history and a redelivered input replays from the task store, not from the model.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from agentbus.shared.events import (
    Decision,
    EscalationRequest,
    ModelCall,
    TaskClassified,
    Usage,
    Verification,
)
from agentbus.shared.events.registry import contains_nul
from agentbus.shared.llm import ModelClient, ModelsConfig, ModelUnavailable, fence, load_template
from agentbus.shared.tools import ToolRegistry, load_registry

from ..toolbox import function_specs
from ..workflows import Planner, TaskState, Transition, default_planner
from ..workflows.base import awaits, denied, new_task, propose, resolved, stopped_by_verifier
from .retrieval import PolicyLibrary, Section

log = logging.getLogger("agentbus.planner.model")

# The tool whose success ends a task, and the one whose free text a drafting model writes.
FINISH_TOOL = "helpdesk.close_ticket"
DRAFT_TOOL, DRAFT_ARG = "helpdesk.reply_to_customer", "body"


@dataclass(frozen=True)
class Turn:
    """One model turn's outcome: a validated call, or why there is none."""

    tool: str | None = None
    args: dict[str, Any] | None = None
    message: dict[str, Any] | None = None  # the assistant message to keep in the conversation
    failure: str | None = None  # model_failed kind when no call
    detail: str = ""


def tool_name(wire: str) -> str:
    """Registry name of a function name on the wire (`ToolSpec.function_spec` turns '.' into '__')."""
    return wire.replace("__", ".")


class ModelPlanner:
    def __init__(
        self,
        config: ModelsConfig,
        *,
        prompts_dir: Path,
        policies_dir: Path,
        registry: ToolRegistry | None = None,
        fallback: Planner | None = None,
        clients: dict[str, ModelClient] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or load_registry()
        self.fallback = fallback or default_planner()
        self.policies_dir = policies_dir
        self.library = PolicyLibrary(policies_dir)
        self.clients = clients or {name: ModelClient(ep) for name, ep in config.endpoints.items()}
        self.plan_prompt = load_template(prompts_dir, "plan")
        self.draft_prompt = load_template(prompts_dir, "draft_reply")
        self._bundles: dict[str, dict[str, Any]] = {}
        self._tool_specs: dict[str, list[dict[str, Any]]] = {}

    # -- Planner interface -------------------------------------------------------------------

    async def start(self, ticket_id: str, tenant_id: str, task: TaskClassified) -> Transition | None:
        if task.workflow not in self.config.workflows:
            return await self.fallback.start(ticket_id, tenant_id, task)
        if not task.eligible:
            return None
        context: dict[str, Any] = {
            "planner": "model",
            "customer_id": task.customer_id,
            "order_id": task.order_id,
            "language": task.language,
            "ticket": {"subject": task.subject, "body": task.body},
            "facts": {"customer_id": task.customer_id, "order_id": task.order_id, **task.facts},
            "conversation": [],
            "done": [],
            "usage": task.usage.model_dump(),  # intake's model use counts towards the ticket
        }
        return await self._next(new_task(ticket_id, tenant_id, task.workflow, context))

    async def on_verified(self, state: TaskState, verification: Verification) -> Transition | None:
        if state.context.get("planner") != "model":
            return await self.fallback.on_verified(state, verification)
        if not awaits(state, verification.action_id):
            return None
        if not verification.verified:
            return stopped_by_verifier(state)
        ctx = dict(state.context)
        result = orjson.dumps(verification.result, option=orjson.OPT_SORT_KEYS).decode()
        ctx["conversation"] = [
            *ctx["conversation"],
            {
                "role": "tool",
                "tool_call_id": ctx["pending_call_id"],
                "content": fence(f"tool:{verification.tool}", result),
            },
        ]
        ctx["done"] = [*ctx["done"], verification.action_id]
        state = replace(state, step=state.step + 1, context=ctx, pending_action_id=None)
        if verification.tool == FINISH_TOOL:
            return resolved(
                state,
                ctx,
                summary=f"Ticket {state.ticket_id}: the model-planned actions ran and the ticket is closed.",
                done=ctx["done"],
                usage=Usage.model_validate(ctx["usage"]),
            )
        return await self._next(state)

    async def on_denied(self, state: TaskState, decision: Decision) -> Transition | None:
        if state.context.get("planner") != "model":
            return await self.fallback.on_denied(state, decision)
        if not awaits(state, decision.proposal.action_id):
            return None
        details = {"customer_id": state.context.get("customer_id"), "order_id": state.context.get("order_id")}
        return denied(
            state,
            decision,
            decision.proposal.tool,
            details,
            usage=Usage.model_validate(state.context["usage"]),
        )

    # -- one planning step -------------------------------------------------------------------

    async def _next(self, state: TaskState) -> Transition:
        routes = self.config.workflows[state.workflow]
        ctx = dict(state.context)
        if len(ctx["done"]) >= routes.max_turns:
            return self._model_failed(
                state, ctx, "turn_limit", f"{routes.max_turns} actions without finishing"
            )
        sections = self._sources(state)
        system = self.plan_prompt.render(
            agent=self._agent(state.workflow),
            workflow=state.workflow,
            ticket_id=state.ticket_id,
            tenant_id=state.tenant_id,
            sources="\n".join(fence(f"policy:{s.id}", f"{s.id} {s.title}\n{s.text}") for s in sections),
        )
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": self._ticket_message(state)},
            *ctx["conversation"],
        ]
        client = self.clients[routes.endpoint]
        step_usage = Usage()
        calls: list[ModelCall] = []
        reasks = 0
        while True:
            try:
                completion = await client.complete(routes.plan_model, messages, self._tools(state.workflow))
            except ModelUnavailable as exc:
                ctx["usage"] = (Usage.model_validate(ctx["usage"]) + step_usage).model_dump()
                return self._model_failed(state, ctx, exc.kind, str(exc), model=routes.plan_model)
            step_usage += self.config.cost(
                routes.plan_model, completion.prompt_tokens, completion.completion_tokens
            )
            turn = self._check(completion.content, completion.tool_calls, completion.message)
            if turn.tool is not None or turn.failure == "ended":
                break
            # Invalid call: keep it in the conversation with the reason, and ask again (bounded).
            messages.append(completion.message)
            messages.extend(
                {"role": "tool", "tool_call_id": call_id, "content": f"Rejected: {turn.detail}"}
                for call_id, _, _ in completion.tool_calls
            )
            if not completion.tool_calls:
                messages.append({"role": "user", "content": f"Rejected: {turn.detail}"})
            reasks += 1
            if reasks > routes.max_reasks:
                ctx["usage"] = (Usage.model_validate(ctx["usage"]) + step_usage).model_dump()
                detail = f"{turn.detail} (asked {reasks} times)"
                return self._model_failed(state, ctx, "invalid_tool_call", detail, model=routes.plan_model)
        plan_call = ModelCall(
            purpose="plan",
            model=routes.plan_model,
            endpoint=routes.endpoint,
            route_reason=f"planning the next action of {state.workflow} uses the large model",
            prompt_version=self.plan_prompt.version,
            sources=[s.id for s in sections],
            reasks=reasks,
            usage=step_usage,
        )
        calls.append(plan_call)
        if turn.tool is None:
            ctx["usage"] = (Usage.model_validate(ctx["usage"]) + step_usage).model_dump()
            return self._model_failed(state, ctx, "ended", turn.detail, model=routes.plan_model, calls=calls)
        assert turn.args is not None and turn.message is not None
        args = dict(turn.args)
        if turn.tool == DRAFT_TOOL and routes.draft_model and isinstance(args.get(DRAFT_ARG), str):
            draft = await self._draft(state, ctx, routes.endpoint, routes.draft_model)
            if draft is not None:
                text, draft_call = draft
                args[DRAFT_ARG] = text
                calls.append(draft_call)
        total_step = sum((c.usage for c in calls), Usage())
        ctx["usage"] = (Usage.model_validate(ctx["usage"]) + total_step).model_dump()
        message = self._with_args(turn.message, args)
        ctx["conversation"] = [*messages[2:], message]
        ctx["pending_call_id"] = message["tool_calls"][0]["id"]
        transition = propose(
            replace(state, context=ctx),
            agent=self._agent(state.workflow),
            tool=turn.tool,
            args=args,
            rationale=(turn.detail or f"The model chose {turn.tool}.")[:2000],
            context={
                "step": f"model-{state.step}",
                "customer_id": ctx["customer_id"],
                # The requester intake authenticated (IT access): policy holds the model's arguments to it.
                **({"user_id": user} if isinstance(user := ctx["facts"].get("user_id"), str) else {}),
                # Per step, in the units policy limits use; policy sums them per task.
                "usage": {
                    "model_calls": total_step.model_calls,
                    "tokens": total_step.tokens,
                    "spend_microdollars": total_step.cost_microdollars,
                },
                "usage_total": ctx["usage"],
                "model_calls": [c.model_dump(mode="json") for c in calls],
            },
        )
        return transition

    def _check(self, content: str | None, tool_calls: list[tuple[str, str, str]], message: dict) -> Turn:
        """Validate the model's answer: exactly one call of a known tool with arguments matching its
        registry schema. Tools outside the workflow's allowed list still go to policy, which refuses
        them on the record; unknown names and bad arguments are re-asked."""
        if not tool_calls:
            return Turn(failure="ended", detail=(content or "the model answered without a tool call").strip())
        if len(tool_calls) > 1:
            return Turn(failure="invalid", detail="make exactly one tool call per answer")
        _, name, raw = tool_calls[0]
        tool = tool_name(name)
        spec = self.registry.get(tool)
        if spec is None:
            return Turn(failure="invalid", detail=f"there is no tool named {name!r}")
        try:
            args = orjson.loads(raw or "{}")
        except orjson.JSONDecodeError as exc:
            return Turn(failure="invalid", detail=f"arguments of {name} are not valid JSON ({exc})")
        if not isinstance(args, dict):
            return Turn(failure="invalid", detail=f"arguments of {name} must be a JSON object")
        if contains_nul(args):
            return Turn(failure="invalid", detail=f"arguments of {name} must not contain NUL characters")
        errors = sorted(jsonschema.Draft202012Validator(spec.args_schema).iter_errors(args), key=str)
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "arguments"
            return Turn(
                failure="invalid",
                detail=f"arguments of {name} do not match its schema: {where}: {errors[0].message}",
            )
        return Turn(tool=tool, args=args, message=message, detail=(content or "").strip())

    async def _draft(
        self, state: TaskState, ctx: dict[str, Any], endpoint: str, model: str
    ) -> tuple[str, ModelCall] | None:
        """The customer reply, written by the small model from what the tools returned. None (keep
        the plan model's text) when drafting fails: a reply is not worth escalating over."""
        results = [m["content"] for m in ctx["conversation"] if m.get("role") == "tool"]
        ticket = ctx["ticket"]
        prompt = self.draft_prompt.render(
            ticket_id=state.ticket_id,
            language=ctx.get("language") or "en",
            facts="\n".join(results) or "(nothing yet)",
            ticket=fence("ticket", f"Subject: {ticket['subject']}\n\n{ticket['body']}"),
        )
        try:
            completion = await self.clients[endpoint].complete(model, [{"role": "user", "content": prompt}])
        except ModelUnavailable as exc:
            log.warning(
                "ticket %s: drafting with %s failed (%s); the plan model's text is kept",
                state.ticket_id,
                model,
                exc.kind,
            )
            return None
        text = (completion.content or "").strip()
        if not text:
            log.warning(
                "ticket %s: %s drafted nothing; the plan model's text is kept", state.ticket_id, model
            )
            return None
        usage = self.config.cost(model, completion.prompt_tokens, completion.completion_tokens)
        call = ModelCall(
            purpose="draft",
            model=model,
            endpoint=endpoint,
            route_reason="drafting customer-facing text uses the small model",
            prompt_version=self.draft_prompt.version,
            usage=usage,
        )
        return text[:4000], call

    def _model_failed(
        self,
        state: TaskState,
        ctx: dict[str, Any],
        kind: str,
        detail: str,
        model: str | None = None,
        calls: list[ModelCall] | None = None,
    ) -> Transition:
        usage = Usage.model_validate(ctx["usage"])
        return Transition(
            state=replace(state, state="escalated", pending_action_id=None, context=ctx),
            escalation=EscalationRequest(
                reason="model_failed",
                summary=(
                    f"Ticket {state.ticket_id}: the planning model could not propose a valid next "
                    f"action ({kind}: {detail[:300]}). Nothing further was done; a human should take over."
                ),
                details={
                    "kind": kind,
                    "model": model,
                    "actions_done": ctx.get("done", []),
                    "model_calls": [c.model_dump(mode="json") for c in calls or []],
                },
                rule_ids=[f"planner.model.{kind}"],
                usage=usage,
            ),
        )

    # -- helpers -----------------------------------------------------------------------------

    def _bundle(self, workflow: str) -> dict[str, Any]:
        if workflow not in self._bundles:
            path = self.policies_dir / workflow / "bundle.toml"
            self._bundles[workflow] = tomllib.loads(path.read_text())
        return self._bundles[workflow]

    def _agent(self, workflow: str) -> str:
        return str(self._bundle(workflow)["agent"]["id"])

    def _tools(self, workflow: str) -> list[dict[str, Any]]:
        """The tools the workflow's bundle allows, as strict function schemas from the registry;
        built once per workflow, not on every turn."""
        if workflow not in self._tool_specs:
            allowed = [n for n in self._bundle(workflow)["tools"]["allowed"] if n in self.registry]
            self._tool_specs[workflow] = function_specs(allowed, self.registry)
        return self._tool_specs[workflow]

    def _sources(self, state: TaskState) -> list[Section]:
        ticket = state.context["ticket"]
        done_tools = " ".join(
            call["function"]["name"].replace("_", " ")
            for m in state.context["conversation"]
            for call in m.get("tool_calls", [])
        )
        query = f"{ticket['subject']} {ticket['body']} {done_tools}"
        return self.library.index(state.workflow).search(query, k=4)

    @staticmethod
    def _ticket_message(state: TaskState) -> str:
        """The task as the model first sees it: ids and facts intake established (trusted), then
        the ticket text (untrusted, fenced)."""
        ctx = state.context
        facts = orjson.dumps(ctx["facts"], option=orjson.OPT_SORT_KEYS).decode()
        ticket = fence("ticket", f"Subject: {ctx['ticket']['subject']}\n\n{ctx['ticket']['body']}")
        header = f"Ticket {state.ticket_id} (tenant {state.tenant_id}). Facts established by intake: {facts}"
        return f"{header}\n\n{ticket}"

    @staticmethod
    def _with_args(message: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
        """The assistant message as kept in the conversation, carrying the arguments proposed."""
        call = dict(message["tool_calls"][0])
        call["function"] = {**call["function"], "arguments": orjson.dumps(args).decode()}
        return {"role": "assistant", "content": message.get("content"), "tool_calls": [call]}
