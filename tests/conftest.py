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
    """Set the environment every process the tests start inherits (every service of each stack, each
    restart, each CLI call). Let them cache their bytecode: where PYTHONDONTWRITEBYTECODE is set
    (containers often set it) and the venv holds no .pyc, each one compiles every module it imports
    from source: about a second of CPU per process, on a machine where a stack is a dozen processes.
    The cache goes under the venv, outside the source tree, as PYTHONDONTWRITEBYTECODE meant."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and not os.environ.get("PYTHONPYCACHEPREFIX"):
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        os.environ["PYTHONPYCACHEPREFIX"] = str(Path(sys.prefix) / "pycache")
    # Consumers on the embedded Tansu poll every fetch_max_wait_ms (it answers a fetch only when the
    # wait expires). The default, 5 ms, keeps a hop at ~6 ms but makes an idle stack burn 1 to 1.6 of
    # this machine's 2 cores; a suite runs a stack in nearly every test, often with a second one, and
    # the polling starved the stages: the 100-ticket re-drive test took 68 s at 5 ms, 53 s at 20 ms.
    # Tests check behaviour, not latency, so they run at 20 ms; `agentbus bench` measures the default.
    os.environ.setdefault("AGENTBUS_FETCH_MAX_WAIT_MS", "20")


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
