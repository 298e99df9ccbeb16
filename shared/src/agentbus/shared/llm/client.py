"""A thin async client over the `openai` package for one configured endpoint: timeouts and
retries by the client, failures as one typed error, usage as plain numbers, and a span per call
with the GenAI semantic-convention attributes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import openai
from opentelemetry import trace

from . import genai
from .config import Endpoint

_TRACER = trace.get_tracer("agentbus.llm")


class ModelUnavailable(Exception):
    """The endpoint did not give a usable answer after the client's retries."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # timeout | connection | status_<code>


@dataclass(frozen=True)
class Completion:
    message: dict[str, Any]  # the assistant message as sent back to the model on a re-ask
    content: str | None
    tool_calls: list[tuple[str, str, str]]  # (call id, function name, raw arguments)
    prompt_tokens: int
    completion_tokens: int


class ModelClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=endpoint.api_key(),
            timeout=endpoint.timeout_s,
            max_retries=endpoint.max_retries,
        )
        self._metrics = genai.ClientMetrics()

    async def complete(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> Completion:
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0}
        if tools:
            # One action at a time: policy decides each before the next is planned.
            kwargs.update(tools=tools, tool_choice="auto", parallel_tool_calls=False)
        attrs = genai.request_attributes(self.endpoint.base_url, kwargs)
        started = time.perf_counter()
        # One CLIENT span per call (the client's retries inside it), a child of the handler's span.
        with _TRACER.start_as_current_span(
            genai.span_name(model), kind=trace.SpanKind.CLIENT, attributes=attrs
        ) as span:
            try:
                response = await self._client.chat.completions.create(**kwargs)
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError) as exc:
                self._metrics.record(attrs, time.perf_counter() - started, error=type(exc).__name__)
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(trace.StatusCode.ERROR, str(exc))
                raise self._unavailable(exc) from exc
            attrs |= genai.response_attributes(response)
            span.set_attributes(attrs)
            self._metrics.record(attrs, time.perf_counter() - started)
        if not response.choices:
            raise ModelUnavailable("empty", "the endpoint returned no choices")
        message = response.choices[0].message
        calls = [
            (c.id, c.function.name, c.function.arguments or "")
            for c in (message.tool_calls or [])
            if c.type == "function"
        ]
        usage = response.usage
        return Completion(
            message=message.model_dump(exclude_none=True, include={"role", "content", "tool_calls"}),
            content=message.content,
            tool_calls=calls,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def _unavailable(self, exc: openai.OpenAIError) -> ModelUnavailable:
        # APITimeoutError is an APIConnectionError: test it first.
        if isinstance(exc, openai.APITimeoutError):
            return ModelUnavailable("timeout", f"no answer within {self.endpoint.timeout_s}s")
        if isinstance(exc, openai.APIStatusError):
            return ModelUnavailable(f"status_{exc.status_code}", str(exc))
        return ModelUnavailable("connection", f"cannot reach {self.endpoint.base_url}: {exc}")

    async def close(self) -> None:
        await self._client.close()
