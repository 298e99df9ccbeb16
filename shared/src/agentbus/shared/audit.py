"""Tamper-evident audit chain: canonical bytes, link hashes, signed head checkpoints, and `verify`.

Row n of audit.events has hash_n = SHA-256(hash_{n-1} || canonical_bytes(record_n)), with hash_0 = 32 zero
bytes. In chain format 2 (migration 008) record_n is the row's header: position, Kafka coordinates,
recorded_at, the envelope columns and the SHA-256 of the canonical event, stored as event_digest.
Retention can then drop an expired event's body and the link still verifies. Format 1 rows (written
before 008) hash the event itself and keep it forever. The trace sink writes rows and signs the head
(position, hash) with Ed25519 into checkpoint files outside the database. `verify` recomputes the
chain from the rows it reads back and checks it against those checkpoints and the retention records.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import asyncpg
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .capabilities import Signer

GENESIS = bytes(32)
CHECKPOINT_FILE = "checkpoints.jsonl"


# ---- canonical bytes ----------------------------------------------------------------------------


def canonical_bytes(value: Any) -> bytes:
    """Deterministic UTF-8 JSON for a JSON value. Any value that survives a trip through jsonb and
    back gives the same bytes before and after.

    Keys are sorted by code point, with no whitespace. Strings are escaped as the standard library's
    `json` does, with non-ASCII characters kept. Numbers are written by exact decimal value in plain
    notation with no trailing zeros, so 1.0 ≡ 1 and 1e16 ≡ 10000000000000000. This matters because
    jsonb stores numbers as `numeric`: it drops the exponent, and the reader then sees an integral
    float as an int. Floats are taken at their shortest round-trip decimal, which is what the
    encoder sent to Postgres.
    """
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if value is None:
        out.append(b"null")
    elif value is True:
        out.append(b"true")
    elif value is False:
        out.append(b"false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    elif isinstance(value, int):
        out.append(str(value).encode())
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, Mapping):
        out.append(b"{")
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            if i:
                out.append(b",")
            out.append(json.dumps(key, ensure_ascii=False).encode("utf-8"))
            out.append(b":")
            _encode(value[key], out)
        out.append(b"}")
    elif isinstance(value, list | tuple):
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(b",")
            _encode(item, out)
        out.append(b"]")
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def _number(value: float) -> bytes:
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("NaN and infinities are not JSON numbers")
    number = Decimal(repr(value))
    if number == 0:
        return b"0"  # numeric has no negative zero
    sign, digit_tuple, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    if exponent >= 0:
        text = stripped + "0" * exponent
    elif (point := len(stripped) + exponent) > 0:
        text = f"{stripped[:point]}.{stripped[point:]}"
    else:
        text = "0." + "0" * -point + stripped
    return (("-" if sign else "") + text).encode()


def instant(moment: datetime) -> str:
    """A timestamp as UTC with microseconds, Postgres's timestamptz precision."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: the audit chain records instants")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_record(
    position: int,
    topic: str,
    kafka_partition: int,
    kafka_offset: int,
    recorded_at: datetime,
    event: Any,
) -> dict[str, Any]:
    """What a row's hash covers besides the previous hash. The other columns copy fields of the
    event, and `verify` checks them against it."""
    return {
        "position": position,
        "topic": topic,
        "kafka_partition": kafka_partition,
        "kafka_offset": kafka_offset,
        "recorded_at": instant(recorded_at),
        "event": event,
    }


def link_hash(prev_hash: bytes, record: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(prev_hash + canonical_bytes(record)).digest()


CHAIN_VERSION = 2  # what the trace sink writes; format 1 is chain_record above
RETENTION_TYPE = "audit.retention"  # the chain row a retention run writes for each tenant it purges


def event_digest(event: Any) -> bytes:
    """SHA-256 of the canonical event: what a format-2 link covers instead of the event."""
    return hashlib.sha256(canonical_bytes(event)).digest()


def chain_header(
    *,
    position: int,
    topic: str,
    kafka_partition: int,
    kafka_offset: int,
    recorded_at: datetime,
    event_id: str,
    event_type: str,
    event_version: int,
    ticket_id: str | None,
    tenant_id: str | None,
    occurred_at: datetime,
    digest: bytes,
) -> dict[str, Any]:
    """What a format-2 row's hash covers besides the previous hash. The columns are in it, so a purged
    row (no event left to compare them with) still cannot be moved to another tenant or ticket."""
    return {
        "chain_version": 2,
        "position": position,
        "topic": topic,
        "kafka_partition": kafka_partition,
        "kafka_offset": kafka_offset,
        "recorded_at": instant(recorded_at),
        "event_id": event_id,
        "type": event_type,
        "version": event_version,
        "ticket_id": ticket_id,
        "tenant_id": tenant_id,
        "occurred_at": instant(occurred_at),
        "event_digest": digest.hex(),
    }


def row_header(row: Mapping[str, Any], digest: bytes) -> dict[str, Any]:
    """chain_header of a row read back from audit.events."""
    return chain_header(
        position=row["position"],
        topic=row["topic"],
        kafka_partition=row["kafka_partition"],
        kafka_offset=row["kafka_offset"],
        recorded_at=row["recorded_at"],
        event_id=row["event_id"],
        event_type=row["type"],
        event_version=row["version"],
        ticket_id=row["ticket_id"],
        tenant_id=row["tenant_id"],
        occurred_at=row["occurred_at"],
        digest=digest,
    )


@dataclass(frozen=True)
class ChainHead:
    position: int
    hash: bytes


# ---- signed checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    position: int
    hash: bytes
    at: str
    kid: str
    source: str  # file:line, for messages


def checkpoint_line(signer: Signer, head: ChainHead, at: datetime) -> bytes:
    """One JSON line: the head, when, and an Ed25519 signature over the canonical bytes of the rest."""
    claims = {"position": head.position, "hash": head.hash.hex(), "at": instant(at), "kid": signer.kid}
    signature = signer.key.sign(canonical_bytes(claims))
    return orjson.dumps({**claims, "sig": base64.urlsafe_b64encode(signature).decode()}) + b"\n"


def append_checkpoint(directory: Path, line: bytes) -> None:
    """Append one line durably. The file is append-only, and replicas of the sink may share it: one
    write() under an exclusive lock keeps their lines whole."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / CHECKPOINT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoints(
    location: Path, keys: Mapping[str, Ed25519PublicKey]
) -> tuple[list[Checkpoint], list[Problem]]:
    """Every checkpoint in a file or in a directory's *.jsonl files: the validly signed ones, and a
    problem for each line that is not."""
    files = sorted(location.glob("*.jsonl")) if location.is_dir() else [location]
    valid: list[Checkpoint] = []
    problems: list[Problem] = []
    for path in files:
        for number, raw in enumerate(path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            source = f"{path}:{number}"
            try:
                valid.append(_checkpoint(raw, keys, source))
            except _BadCheckpoint as exc:
                problems.append(Problem("bad_checkpoint", None, None, f"{source}: {exc}"))
    return valid, problems


class _BadCheckpoint(Exception):
    pass


def _checkpoint(raw: bytes, keys: Mapping[str, Ed25519PublicKey], source: str) -> Checkpoint:
    try:
        data = orjson.loads(raw)
        claims = {k: data[k] for k in ("position", "hash", "at", "kid")}
        signature = base64.urlsafe_b64decode(data["sig"])
        position, digest = int(claims["position"]), bytes.fromhex(claims["hash"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise _BadCheckpoint(f"malformed checkpoint ({type(exc).__name__}: {exc})") from exc
    key = keys.get(claims["kid"])
    if key is None:
        raise _BadCheckpoint(
            f"no public key for key id {claims['kid']!r}, so the signature cannot be checked"
        )
    try:
        key.verify(signature, canonical_bytes(claims))
    except InvalidSignature as exc:
        raise _BadCheckpoint(
            f"bad signature (key id {claims['kid']!r}) on the checkpoint for position {position}"
        ) from exc
    return Checkpoint(position, digest, str(claims["at"]), str(claims["kid"]), source)


# ---- verify ---------------------------------------------------------------------------------------

Kind = Literal[
    "modified",  # the row's content no longer matches its hash (or its columns disagree with the event)
    "purged",  # the event was removed, and no retention record covers it
    "deleted",  # positions are missing
    "relinked",  # prev_hash is not the previous row's hash: that row was rewritten or replaced
    "unsealed",  # a row from before the chain that the trace sink has not hashed yet
    "truncated",  # the chain ends before a signed checkpoint's position
    "checkpoint_mismatch",  # the row at a checkpoint's position has another hash: history rewritten
    "bad_checkpoint",  # a checkpoint line that is malformed or not validly signed
]


@dataclass(frozen=True)
class Problem:
    kind: Kind
    position: int | None
    event_id: str | None
    detail: str

    def __str__(self) -> str:
        where = f"position {self.position}" if self.position is not None else "checkpoint"
        event = f" (event {self.event_id})" if self.event_id else ""
        return f"{where}{event}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    events: int = 0
    head: ChainHead | None = None
    checkpoints: int = 0  # validly signed checkpoints held against the chain
    latest_checkpoint: Checkpoint | None = None
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0  # found beyond the ones kept
    purged: int = 0  # rows whose event retention removed, checked through their digest

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        """The first broken link in chain order (bad checkpoint lines come after chain problems)."""
        return self.problems[0] if self.problems else None

    def to_json(self) -> dict[str, Any]:
        latest = self.latest_checkpoint
        return {
            "ok": self.ok,
            "events": self.events,
            "head": {"position": self.head.position, "hash": self.head.hash.hex()} if self.head else None,
            "checkpoints": self.checkpoints,
            "latest_checkpoint": (
                {
                    "position": latest.position,
                    "hash": latest.hash.hex(),
                    "at": latest.at,
                    "source": latest.source,
                }
                if latest
                else None
            ),
            "problems": [
                {"kind": p.kind, "position": p.position, "event_id": p.event_id, "detail": p.detail}
                for p in self.problems
            ],
            "more_problems": self.more_problems,
            "purged": self.purged,
        }


CHAIN_QUERY = """
SELECT position, prev_hash, hash, event_id, type, version, ticket_id, tenant_id, topic,
       kafka_partition, kafka_offset, occurred_at, recorded_at, event, chain_version, event_digest
FROM audit.events ORDER BY position
"""
RETENTION_QUERY = """
SELECT position, tenant_id, event #>> '{payload,cutoff}' AS cutoff
FROM audit.events WHERE type = $1 AND event IS NOT NULL
"""


@dataclass(frozen=True)
class RetentionMark:
    """A retention record: rows of `tenant` recorded before `cutoff`, earlier in the chain, may be purged."""

    position: int
    tenant: str
    cutoff: datetime


async def verify(
    conn: asyncpg.Connection,
    checkpoints: Path | None = None,
    keys: Mapping[str, Ed25519PublicKey] | None = None,
    *,
    max_problems: int = 100,
) -> VerifyReport:
    """Walk the chain in position order, recomputing every hash, then hold it against the signed
    checkpoints (a file or directory; `keys` are the public keys by key id). A row whose event was
    purged is checked through its digest and must be covered by a retention record."""
    report = VerifyReport()
    chain_problems: list[Problem] = []

    def found(problem: Problem) -> None:
        if len(chain_problems) < max_problems:
            chain_problems.append(problem)
        else:
            report.more_problems += 1

    # Checkpoints are read before the snapshot is taken. Each was written after its rows
    # committed, so none can point past the snapshot's head.
    anchors, bad_anchors = (
        await asyncio.to_thread(read_checkpoints, checkpoints, keys or {}) if checkpoints else ([], [])
    )
    by_position: dict[int, list[Checkpoint]] = {}
    for anchor in anchors:
        by_position.setdefault(anchor.position, []).append(anchor)
    report.checkpoints = len(anchors)
    report.latest_checkpoint = max(anchors, key=lambda a: a.position, default=None)

    prev_hash: bytes | None = GENESIS
    expected = 1
    last_event_id: str | None = None
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # Read in the walk's snapshot. Each record is itself a chain row, so the walk checks it too.
        marks = [m for r in await conn.fetch(RETENTION_QUERY, RETENTION_TYPE) if (m := _mark(r))]
        async for row in conn.cursor(CHAIN_QUERY, prefetch=1000):
            report.events += 1
            position, event_id = row["position"], row["event_id"]
            event = row["event"]
            if isinstance(event, str):  # a connection without the JSON codec
                event = orjson.loads(event)
            if position != expected:
                missing = str(expected) if position == expected + 1 else f"{expected}-{position - 1}"
                found(
                    Problem(
                        "deleted",
                        expected,
                        event_id,
                        f"position {missing} missing (rows deleted); the chain resumes at position "
                        f"{position} with event {event_id}",
                    )
                )
            elif row["hash"] is None:
                found(Problem("unsealed", position, event_id, "written before the chain; not hashed yet"))
            elif prev_hash is not None and row["prev_hash"] != prev_hash:
                found(
                    Problem(
                        "relinked",
                        position,
                        event_id,
                        f"prev_hash does not match the hash of position {position - 1}: that row was "
                        "rewritten or replaced",
                    )
                )
            if row["hash"] is not None:
                if problem := _content_problem(row, event, marks):
                    found(problem)
                elif event is None:
                    report.purged += 1
            for anchor in by_position.pop(position, []):
                if anchor.hash != row["hash"]:
                    found(
                        Problem(
                            "checkpoint_mismatch",
                            position,
                            event_id,
                            f"hash differs from the checkpoint signed at {anchor.at} ({anchor.source}): "
                            "history up to here was rewritten",
                        )
                    )
            prev_hash, expected, last_event_id = row["hash"], position + 1, event_id
            report.head = ChainHead(position, row["hash"]) if row["hash"] is not None else None

    end = expected - 1
    latest = report.latest_checkpoint
    if latest is not None and latest.position > end:
        ends = f"at position {end} (event {last_event_id})" if end else "empty"
        found(
            Problem(
                "truncated",
                end + 1,
                None,
                f"the chain ends {ends} but the checkpoint signed at {latest.at} ({latest.source}) "
                f"covers position {latest.position}: positions {end + 1}-{latest.position} were removed",
            )
        )
    report.problems = chain_problems + bad_anchors
    return report


MODIFIED = "it was modified after it was written"


def _content_problem(row: Mapping[str, Any], event: Any, marks: list[RetentionMark]) -> Problem | None:
    """What is wrong with a sealed row's own content, given the retention records of the chain."""
    position, event_id = row["position"], row["event_id"]

    def modified(detail: str) -> Problem:
        return Problem("modified", position, event_id, detail)

    prev, version, digest = row["prev_hash"] or b"", row["chain_version"], row["event_digest"]
    if version == 1:
        if event is None:
            return modified(f"a format-1 row lost its event, which its hash covers: {MODIFIED}")
        record = chain_record(
            position, row["topic"], row["kafka_partition"], row["kafka_offset"], row["recorded_at"], event
        )
        if link_hash(prev, record) != row["hash"]:
            return modified(f"the row's content does not match its hash: {MODIFIED}")
    elif version != CHAIN_VERSION or digest is None:
        return modified(f"chain format {version} with event digest {digest!r}: {MODIFIED}")
    elif event is not None and event_digest(event) != digest:
        return modified(f"the event does not match its digest: {MODIFIED}")
    # The columns are checked against the event first: that names the column that changed.
    if event is not None and (disagreement := _column_disagreement(row, event)):
        return modified(disagreement)
    if version == CHAIN_VERSION and link_hash(prev, row_header(row, digest)) != row["hash"]:
        return modified(f"the row's columns do not match its hash: {MODIFIED}")
    return _purge_problem(row, marks) if event is None else None


def _purge_problem(row: Mapping[str, Any], marks: list[RetentionMark]) -> Problem | None:
    """None when a later retention record of the row's tenant has a cutoff after the row was recorded."""
    if row["type"] == RETENTION_TYPE:
        return Problem(
            "purged",
            row["position"],
            row["event_id"],
            "a retention record lost its body; retention keeps them",
        )
    tenant, recorded_at = row["tenant_id"], row["recorded_at"]
    if any(m.tenant == tenant and m.position > row["position"] and recorded_at < m.cutoff for m in marks):
        return None
    return Problem(
        "purged",
        row["position"],
        row["event_id"],
        f"the event was removed, but no retention record of tenant {tenant!r} has a cutoff after its "
        f"recorded_at {instant(recorded_at)}: it was purged outside `agentbus audit retention`",
    )


def _mark(row: Mapping[str, Any]) -> RetentionMark | None:
    try:
        cutoff = datetime.fromisoformat(row["cutoff"])
    except (TypeError, ValueError):
        return None  # covers nothing; the walk still checks the record row itself
    if cutoff.tzinfo is None or row["tenant_id"] is None:
        return None
    return RetentionMark(row["position"], row["tenant_id"], cutoff)


def _column_disagreement(row: Mapping[str, Any], event: Any) -> str | None:
    """The columns `trace` and queries filter on copy the event; a change there is a change too."""
    if not isinstance(event, Mapping):
        return "the stored event is not a JSON object"
    for column in ("event_id", "type", "version", "ticket_id", "tenant_id"):
        if row[column] != event.get(column):
            return f"column {column} is {row[column]!r} but the event says {event.get(column)!r}"
    try:
        same = datetime.fromisoformat(event["occurred_at"]) == row["occurred_at"]
    except (KeyError, TypeError, ValueError):
        same = False
    if not same:
        return f"column occurred_at is {row['occurred_at']} but the event says {event.get('occurred_at')!r}"
    return None
