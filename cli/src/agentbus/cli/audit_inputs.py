"""What the audit commands read from their options: the database to use and ISO 8601 instants."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from .options import fail
from .runtime import RuntimeInfo


def database_url(given: str | None, state_dir: Path) -> str:
    """--database-url / DATABASE_URL, else the database of the stack `agentbus up` started."""
    if not given:
        info = RuntimeInfo.load(state_dir / "runtime.json")
        given = info.database_url if info else None
    if not given:
        fail("no database: start the stack with `agentbus up`, or set DATABASE_URL (or --database-url)")
    return given


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time; UTC when it names no offset."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: expected an ISO 8601 time such as 2026-11-21 or 2026-11-21T09:30:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
