"""Runs one tool call under its declared policy: timeout, retries with backoff, circuit breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentbus.shared.tools import ToolSpec
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from .errors import RetryableToolError, ToolError, UnknownOutcome


@dataclass(frozen=True)
class Outcome:
    status: str  # succeeded | failed | unknown
    result: dict[str, Any]
    error: str | None
    attempts: int


class Runner:
    def __init__(self, breaker_threshold: int = 5, breaker_ttl_s: float = 30.0) -> None:
        # One breaker per tool: a failing system stops being called for a while, the others go on.
        self.breakers = AsyncCircuitBreakerFactory(
            default_threshold=breaker_threshold,
            default_ttl=breaker_ttl_s,
            exclude=[ToolError],  # a refusal is an answer, not a sign the system is down
        )

    async def run(self, spec: ToolSpec, call: Callable[[], Awaitable[dict[str, Any]]]) -> Outcome:
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(spec.retry.max_attempts),
            wait=wait_exponential(multiplier=spec.retry.initial_backoff_s, max=spec.retry.max_backoff_s),
            retry=retry_if_exception_type((RetryableToolError, UnknownOutcome)),
            reraise=True,
        )
        breaker = await self.breakers.get_breaker(spec.name)
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    async with breaker:
                        try:
                            result = await asyncio.wait_for(call(), timeout=spec.timeout_s)
                        except TimeoutError as exc:
                            raise UnknownOutcome(f"no answer within {spec.timeout_s:g}s") from exc
            return Outcome("succeeded", result, None, attempts)
        except ToolError as exc:
            return Outcome("failed", {}, str(exc), attempts)
        except RetryableToolError as exc:
            return Outcome("failed", {}, f"{exc} (after {attempts} attempts)", attempts)
        except UnknownOutcome as exc:
            return Outcome("unknown", {}, f"outcome unknown: {exc} (after {attempts} attempts)", attempts)
        except OpenedState:
            return Outcome("failed", {}, f"circuit open for {spec.name}: recent calls kept failing", attempts)
