"""A thin async client over the `openai` package for one configured endpoint: timeouts and
retries by the client, failures as one typed error, usage as plain numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai

from .config import Endpoint


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

    async def complete(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> Completion:
        kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0}
        if tools:
            # One action at a time: policy decides each before the next is planned.
            kwargs.update(tools=tools, tool_choice="auto", parallel_tool_calls=False)
        try:
            response = await self._client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as exc:
            raise ModelUnavailable("timeout", f"no answer within {self.endpoint.timeout_s}s") from exc
        except openai.APIConnectionError as exc:
            raise ModelUnavailable("connection", f"cannot reach {self.endpoint.base_url}: {exc}") from exc
        except openai.APIStatusError as exc:
            raise ModelUnavailable(f"status_{exc.status_code}", str(exc)) from exc
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

    async def close(self) -> None:
        await self._client.close()
