"""A service started while Postgres is away waits for it instead of exiting; a mistake that no wait
can mend (a database that does not exist) still fails at once."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from agentbus.cli.runtime import free_port
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings
from chaos.proxy import FaultyProxy

pytestmark = pytest.mark.integration


def via_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{port}"))


async def test_a_start_during_an_outage_waits_for_postgres(server_database_url):
    target = urlsplit(server_database_url)
    # The way to Postgres: a proxy that listens only once started (the chaos suite's).
    proxy = FaultyProxy("postgres", lambda: (target.hostname or "127.0.0.1", target.port or 5432))
    settings = Settings(service="planner", database_url=via_port(server_database_url, proxy.port))
    started = time.monotonic()
    opening = asyncio.create_task(open_pool(settings, wait_s=20))
    await asyncio.sleep(1.0)  # nothing listens: every attempt is refused
    assert not opening.done()
    proxy.start()
    try:
        pool = await asyncio.wait_for(opening, 15)
        try:
            assert await pool.fetchval("SELECT 41 + 1") == 42
        finally:
            await pool.close()
    finally:
        proxy.stop()
    assert time.monotonic() - started >= 1.0


async def test_it_gives_up_after_its_wait():
    settings = Settings(service="planner", database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    started = time.monotonic()
    with pytest.raises(OSError):
        await open_pool(settings, wait_s=1.0)
    assert 0.5 <= time.monotonic() - started < 5


async def test_a_database_that_does_not_exist_fails_at_once(server_database_url):
    missing = urlsplit(server_database_url)._replace(path="/agentbus_no_such_database")
    settings = Settings(service="planner", database_url=urlunsplit(missing))
    started = time.monotonic()
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await open_pool(settings, wait_s=30)
    assert time.monotonic() - started < 5
