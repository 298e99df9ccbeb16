"""Model-assisted classification: a small model names intent, language and risk through one
strict function call; anything unusable falls back to the rules, and the call is recorded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import orjson
from agentbus.shared.events import ModelCall, TicketReceived, Usage
from agentbus.shared.llm import ModelClient, ModelsConfig, ModelUnavailable, fence, load_template
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Intent = Literal["refund_request", "password_reset", "group_access", "question"]


class ModelHint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    intent: Intent
    language: str = Field(pattern=r"^[a-z]{2}$")
    risk_tier: Literal["low", "medium", "high"]


CLASSIFY_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "classify_ticket",
        "description": "Record the ticket's intent, language and risk tier.",
        "parameters": {
            "type": "object",
            "properties": {
                "intent": {"type": "string", "enum": list(get_args(Intent))},
                "language": {"type": "string", "description": "ISO 639-1 code, e.g. en"},
                "risk_tier": {"type": "string", "enum": ["low", "medium", "high"]},
            },
            "required": ["intent", "language", "risk_tier"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


@dataclass(frozen=True)
class Classification:
    hint: ModelHint | None  # None: use the rules alone
    reason: str  # intake rule id saying what happened
    call: ModelCall | None  # None when no request reached the model


class ModelClassifier:
    def __init__(self, config: ModelsConfig, prompts_dir: Path, client: ModelClient | None = None) -> None:
        assert config.intake is not None, "intake has no model configured"
        self.config = config
        self.routes = config.intake
        self.client = client or ModelClient(config.endpoints[self.routes.endpoint])
        self.prompt = load_template(prompts_dir, "classify")

    async def classify(self, ticket: TicketReceived) -> Classification:
        """`ticket` must already have its PII replaced by tokens."""
        messages = [
            {"role": "system", "content": self.prompt.render()},
            {"role": "user", "content": fence("ticket", f"Subject: {ticket.subject}\n\n{ticket.body}")},
        ]
        try:
            completion = await self.client.complete(self.routes.model, messages, [CLASSIFY_TOOL])
        except ModelUnavailable as exc:
            return Classification(None, f"intake.model.fallback.{exc.kind}", None)
        usage = self.config.cost(self.routes.model, completion.prompt_tokens, completion.completion_tokens)
        call = self._call(usage)
        args = [raw for _, name, raw in completion.tool_calls if name == "classify_ticket"]
        if len(args) != 1:
            return Classification(None, "intake.model.fallback.no_classification", call)
        try:
            hint = ModelHint.model_validate(orjson.loads(args[0]))
        except (orjson.JSONDecodeError, ValidationError):
            return Classification(None, "intake.model.fallback.invalid", call)
        return Classification(hint, "intake.model.classified", call)

    def _call(self, usage: Usage) -> ModelCall:
        return ModelCall(
            purpose="classify",
            model=self.routes.model,
            endpoint=self.routes.endpoint,
            route_reason="classification uses the small model",
            prompt_version=self.prompt.version,
            usage=usage,
        )
