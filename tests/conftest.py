"""Shared fixtures: the real embedded broker, Postgres (server at DATABASE_URL and embedded), and
fresh topics and databases per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from agentbus.cli.runtime import EmbeddedBroker, EmbeddedPostgres

REPO = Path(__file__).resolve().parents[1]
# The machine's Postgres server; CI has it at this address with trust auth.
SERVER_URL = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real Tansu broker for the session; tests isolate themselves with topic prefixes."""
    embedded = EmbeddedBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    embedded.start()
    yield embedded
    embedded.stop()


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[str]:
    server = EmbeddedPostgres()
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


async def _fresh_database(admin_url: str) -> tuple[str, str]:
    name = f"agentbus_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, _with_database(admin_url, name)


def _with_database(url: str, name: str) -> str:
    """Swap the database name in a postgres URL (works for host= socket URLs too)."""
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["server", "embedded"])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh, empty database on the Postgres server at DATABASE_URL, or on embedded Postgres."""
    admin = SERVER_URL if request.param == "server" else request.getfixturevalue("embedded_pg")
    name, url = await _fresh_database(admin)
    yield url
    await _drop_database(admin, name)


@pytest.fixture
async def server_database_url() -> AsyncIterator[str]:
    """A fresh database on the Postgres server only (for the slower stack tests)."""
    name, url = await _fresh_database(SERVER_URL)
    yield url
    await _drop_database(SERVER_URL, name)
