"""Shared fixtures: the real embedded broker, Postgres (server at DATABASE_URL and embedded), and
fresh topics and databases per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from agentbus.cli.runtime import EmbeddedBroker, EmbeddedPostgres
from databases import SERVER_URL, drop_database, fresh_database

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(params=["server", "embedded"])
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh, empty database on the Postgres server at DATABASE_URL, or on embedded Postgres."""
    admin = SERVER_URL if request.param == "server" else request.getfixturevalue("embedded_pg")
    name, url = await fresh_database(admin)
    yield url
    await drop_database(admin, name)


@pytest.fixture
async def server_database_url() -> AsyncIterator[str]:
    """A fresh database on the Postgres server only (for the slower stack tests)."""
    name, url = await fresh_database(SERVER_URL)
    yield url
    await drop_database(SERVER_URL, name)
