"""The models file (TOML): endpoints, the price table, and which model each workflow and intake
use for what. Validated on load; an error names the file and the field to fix."""

from __future__ import annotations

import os
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..events import Usage
from ..validation import problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Strict):
    base_url: str = Field(description="any OpenAI-compatible API, e.g. https://api.openai.com/v1")
    api_key_env: str | None = Field(default=None, description="environment variable holding the key")
    timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, description="client retries on timeouts and 5xx")

    def api_key(self) -> str:
        # Local servers need no key, but the client insists on one.
        return (os.environ.get(self.api_key_env) if self.api_key_env else None) or "not-needed"


class Price(_Strict):
    input_usd_per_mtok: Decimal = Field(ge=0)
    output_usd_per_mtok: Decimal = Field(ge=0)

    def cost_microdollars(self, prompt_tokens: int, completion_tokens: int) -> int:
        # USD per million tokens is exactly micro-dollars per token.
        cost = prompt_tokens * self.input_usd_per_mtok + completion_tokens * self.output_usd_per_mtok
        return int(cost.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class WorkflowModels(_Strict):
    """Routing for one workflow: a large model plans (picks the next tool call), a small one
    drafts customer-facing text."""

    endpoint: str
    plan_model: str
    draft_model: str | None = Field(default=None, description="None: the plan model writes replies")
    max_reasks: int = Field(default=2, ge=0, description="re-asks after invalid tool calls, then escalate")
    max_turns: int = Field(default=12, ge=1, description="model turns per task before escalating")


class IntakeModels(_Strict):
    endpoint: str
    model: str


class ModelsConfig(_Strict):
    endpoints: dict[str, Endpoint]
    prices: dict[str, Price] = Field(default_factory=dict)
    intake: IntakeModels | None = None
    workflows: dict[str, WorkflowModels] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references_resolve(self) -> ModelsConfig:
        uses: list[tuple[str, str, str | None]] = []
        if self.intake is not None:
            uses.append(("intake", self.intake.endpoint, self.intake.model))
        for name, wf in self.workflows.items():
            uses.append((f"workflows.{name}", wf.endpoint, wf.plan_model))
            uses.append((f"workflows.{name}", wf.endpoint, wf.draft_model))
        for where, endpoint, model in uses:
            if endpoint not in self.endpoints:
                raise ValueError(f"{where}: endpoint {endpoint!r} is not defined under [endpoints]")
            if model is not None and model not in self.prices:
                # Cost accounting must be complete: an unpriced model would spend invisibly.
                raise ValueError(f"{where}: model {model!r} has no entry under [prices]")
        return self

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Usage:
        return Usage(
            model_calls=1,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_microdollars=self.prices[model].cost_microdollars(prompt_tokens, completion_tokens),
        )


class ModelsFileError(ValueError):
    pass


def load_models(path: Path) -> ModelsConfig:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelsFileError(f"{path}: {exc}") from exc
    try:
        return ModelsConfig.model_validate(data)
    except ValidationError as exc:
        raise ModelsFileError(f"{path}: {problems(exc, root='(top level)')}") from exc
