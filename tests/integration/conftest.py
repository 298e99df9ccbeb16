"""Fixtures for integration tests: the real stack, each service its own process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from agentbus.cli.runtime import EmbeddedBroker
from agentbus.cli.stack import EMBEDDED_BROKER_ENV, Stack


@asynccontextmanager
async def running_stack(
    broker: EmbeddedBroker,
    database_url: str,
    prefix: str,
    state_dir: Path,
    extra_env: dict[str, str] | None = None,
    **kwargs: object,
) -> AsyncIterator[Stack]:
    stack = Stack(
        state_dir=state_dir,
        bootstrap=broker.bootstrap,
        database_url=database_url,
        topic_prefix=prefix,
        extra_env={**EMBEDDED_BROKER_ENV, **(extra_env or {})},
        **kwargs,  # type: ignore[arg-type]
    )
    try:
        await stack.start()
        yield stack
    except BaseException:
        for log in sorted((state_dir / "logs").glob("*.log")):
            print(f"==== {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        stack.stop()


@pytest.fixture
def start_stack():
    """`async with start_stack(broker, db, prefix, dir[, extra_env=…]) as stack:` — the stack, logs
    shown on failure."""
    return running_stack


@pytest.fixture
def payment_api():
    """The local payment API (tests/payment_api.py), running for one test."""
    from payment_api import PaymentApi

    api = PaymentApi()
    api.start()
    yield api
    api.stop()
