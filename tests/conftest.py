"""Shared fixtures: the real embedded broker, Postgres (server at DATABASE_URL and embedded), and
fresh topics and databases per test."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from agentbus.cli.runtime import EmbeddedBroker, EmbeddedPostgres
from databases import SERVER_URL, drop_database, fresh_database

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Let the processes the tests start (every service of each stack, each restart, each CLI call)
    cache their bytecode. Where PYTHONDONTWRITEBYTECODE is set (containers often set it) and the venv
    holds no .pyc, each one compiles every module it imports from source: about a second of CPU per
    process, on a machine where a stack is a dozen processes. The cache goes under the venv, outside
    the source tree, as PYTHONDONTWRITEBYTECODE meant."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        os.environ["PYTHONPYCACHEPREFIX"] = str(Path(sys.prefix) / "pycache")


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
