"""OpenTelemetry GenAI semantic conventions for a chat completion: span name, attributes and the
client metrics, mapped from the request we send and the OpenAI-compatible response we get."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from opentelemetry import metrics

# Every endpoint is spoken to with the `openai` client (OpenAI-compatible APIs).
PROVIDER = "openai"
OPERATION = "chat"

# The bucket boundaries the semantic conventions advise for the two client metrics.
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 s … 81.92 s
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1 … 4^13 tokens


def span_name(model: str) -> str:
    return f"{OPERATION} {model}"


def request_attributes(base_url: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Attributes known before the call, from the arguments to `chat.completions.create`."""
    url = urlsplit(base_url)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": PROVIDER,
        "gen_ai.system": PROVIDER,  # the name before semconv 1.37, which many backends still read
        "gen_ai.request.model": kwargs["model"],
        "server.address": url.hostname or "",
    }
    if url.port is not None:
        attrs["server.port"] = url.port
    if (temperature := kwargs.get("temperature")) is not None:
        attrs["gen_ai.request.temperature"] = float(temperature)
    if (max_tokens := kwargs.get("max_tokens")) is not None:
        attrs["gen_ai.request.max_tokens"] = max_tokens
    return attrs


def response_attributes(response: Any) -> dict[str, Any]:
    """Attributes from a ChatCompletion: id, model, finish reasons, token usage (what it reports)."""
    attrs: dict[str, Any] = {}
    if getattr(response, "id", None):
        attrs["gen_ai.response.id"] = response.id
    if getattr(response, "model", None):
        attrs["gen_ai.response.model"] = response.model
    reasons = [c.finish_reason for c in getattr(response, "choices", None) or () if c.finish_reason]
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    if usage := getattr(response, "usage", None):
        attrs["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.completion_tokens
    return attrs


class ClientMetrics:
    """The semconv client metrics: operation duration and token usage (input and output)."""

    def __init__(self) -> None:
        meter = metrics.get_meter("agentbus.llm")
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Measures number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )

    def record(self, attrs: dict[str, Any], seconds: float, error: str | None = None) -> None:
        base: dict[str, Any] = {
            k: attrs[k]
            for k in (
                "gen_ai.operation.name",
                "gen_ai.provider.name",
                "gen_ai.request.model",
                "gen_ai.response.model",
                "server.address",
            )
            if k in attrs
        }
        self.duration.record(seconds, {**base, "error.type": error} if error else base)
        for kind, key in (("input", "gen_ai.usage.input_tokens"), ("output", "gen_ai.usage.output_tokens")):
            if key in attrs:
                self.tokens.record(attrs[key], {**base, "gen_ai.token.type": kind})
