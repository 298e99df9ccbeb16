"""Postgres access for services: an asyncpg pool with orjson JSONB codecs, and ordered SQL migrations."""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import time
from typing import Any

import asyncpg
import orjson

from .settings import Settings
from .transient import is_transient, outage_backoff

log = logging.getLogger(__name__)

MIGRATIONS_PACKAGE = "agentbus.shared.migrations"
# Any fixed number works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK_ID = 7_364_211


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb", "json"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(dsn: str, *, max_size: int = 4, **kwargs: Any) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, init=_init_connection, **kwargs)
    assert pool is not None
    return pool


async def open_pool(settings: Settings, *, wait_s: float = 60.0) -> asyncpg.Pool:
    """The service's pool, or a clear error when it was started without a database. Started during
    a Postgres outage (a restart, a cut connection), it waits up to `wait_s` for the database
    instead of exiting: a process that exits at start-up goes into its supervisor's back-off."""
    if not settings.database_url:
        raise RuntimeError(f"DATABASE_URL is not set: the {settings.service} service needs Postgres")
    deadline, tries = time.monotonic() + wait_s, 0
    while True:
        try:
            return await create_pool(settings.database_url, max_size=settings.db_pool_max)
        except Exception as exc:
            tries += 1
            delay = outage_backoff(tries, 0.2)
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("Postgres is not reachable yet (%r); trying again in %.1fs", exc, delay)
            await asyncio.sleep(delay)


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in name order."""
    root = importlib.resources.files(MIGRATIONS_PACKAGE)
    files = sorted((p for p in root.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text()) for p in files]


async def migrate(dsn: str) -> list[str]:
    """Apply pending migrations under an advisory lock; returns the names applied now."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS agentbus_meta;"
            "CREATE TABLE IF NOT EXISTS agentbus_meta.schema_migrations("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM agentbus_meta.schema_migrations")}
        applied = []
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO agentbus_meta.schema_migrations(name) VALUES ($1)", name)
            applied.append(name)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
        await conn.close()
