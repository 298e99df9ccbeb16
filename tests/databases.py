"""Fresh, throw-away databases on a Postgres server, for tests."""

from __future__ import annotations

import os
import uuid

import asyncpg

# The machine's Postgres server; CI has it at this address with trust auth.
SERVER_URL = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"


async def fresh_database(admin_url: str) -> tuple[str, str]:
    name = f"agentbus_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, with_database(admin_url, name)


def with_database(url: str, name: str) -> str:
    """Swap the database name in a postgres URL (works for host= socket URLs too)."""
    head, _, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def tamper_as_superuser(url: str, sql: str, *args: object) -> None:
    """Run `sql` as a superuser who switches the append-only triggers off for the session: what an
    attacker with the database's keys can do, and what the audit chain must expose."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(sql, *args)
    finally:
        await conn.close()
