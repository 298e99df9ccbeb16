"""Which handler errors mean the infrastructure is away (retry until it is back) rather than that the
message cannot be handled (bounded attempts, then the dead-letter topic)."""

from __future__ import annotations

import asyncpg
from aiokafka.errors import KafkaError, KafkaTimeoutError

# Postgres restarting, crashing, shutting down, full, or the connection gone (asyncpg), and the
# sockets under any client. A restart takes seconds: counted against a message's attempts, valid
# events were dead-lettered and their tickets never finished (tests/chaos, pg_crash).
_POSTGRES_AWAY = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


# Longest pause between tries while Postgres or the broker is away.
OUTAGE_BACKOFF_CAP_S = 5.0


def outage_backoff(tries: int, first_s: float) -> float:
    """The pause before try `tries` + 1 during an outage: doubling from `first_s`, capped."""
    return min(OUTAGE_BACKOFF_CAP_S, first_s * 2 ** min(tries - 1, 8))


def is_transient(exc: BaseException) -> bool:
    """True for an outage: the same message will succeed once Postgres or the broker is back."""
    if isinstance(exc, (*_POSTGRES_AWAY, ConnectionError, KafkaTimeoutError)):
        return True
    if isinstance(exc, KafkaError):
        return bool(exc.retriable)
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)
