"""What a model call cost and how it was made, as recorded on the events it shaped."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .envelope import Model


class Usage(Model):
    """Model usage summed over some calls. Money is integer micro-dollars (1e-6 USD) everywhere,
    the unit policy budgets and limits use, so sums never drift."""

    model_calls: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cost_microdollars: int = Field(default=0, ge=0)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            model_calls=self.model_calls + other.model_calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_microdollars=self.cost_microdollars + other.cost_microdollars,
        )


class ModelCall(Model):
    """One step's use of a model: which model and why (routing), which prompt version, which
    policy sections were retrieved, how many attempts and re-asks, and what it cost."""

    purpose: Literal["classify", "plan", "draft"]
    model: str
    endpoint: str = Field(description="configured endpoint name, never its key")
    route_reason: str
    prompt_version: str = Field(description="template name@sha256 prefix of the template file")
    sources: list[str] = Field(default_factory=list, description="policy section ids given as context")
    reasks: int = Field(default=0, ge=0, description="re-asks after invalid output")
    usage: Usage


class PiiRef(Model):
    token: str = Field(description="what replaced the value, e.g. [pii:email:…]")
    kind: Literal["email", "phone", "card", "iban", "address"]
