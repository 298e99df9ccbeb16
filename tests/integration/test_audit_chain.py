"""The hash-chained audit store on real Postgres. Writers (two at a time, with redeliveries) leave one
gap-free chain. Every kind of tampering a superuser can do is named by `verify` and by
`agentbus audit verify`. The trace sink, run as the stack runs it, signs checkpoints."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import asyncpg
import builders
import orjson
import pytest
from agentbus.cli import client
from agentbus.cli.main import app as cli
from agentbus.cli.stack import audit_paths
from agentbus.shared import serialization
from agentbus.shared.audit import (
    GENESIS,
    ChainHead,
    VerifyReport,
    canonical_bytes,
    chain_record,
    event_digest,
    link_hash,
    read_checkpoints,
    row_header,
    verify,
)
from agentbus.shared.capabilities import Signer, generate_keypair, load_signer, load_verify_keys
from agentbus.shared.db import connect, create_pool, migrate, migration_files
from agentbus.shared.events import TicketReceivedV1
from agentbus.trace_sink import store
from agentbus.trace_sink.checkpoints import Checkpointer
from agentbus.trace_sink.sink import to_row
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from databases import SERVER_URL, tamper_as_superuser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

TOPIC = "agentbus.tickets.received.v1"
# Values whose text changes in jsonb: exponents expanded (1e16 comes back as an int), keys reordered,
# -0.0 loses its sign, escapes and unicode re-rendered.
AWKWARD = {
    "floats": [0.1, 1e16, 1e23, 1e300, 5e-324, -0.0, 1.5e-7, 2.0, -123.456],
    "ints": [0, -(2**63), 2**64 - 1],
    "unicode": ["é", "e\u0301", "😀", "\u2028", 'quote " and \\', "\x01\t\n", "שלום"],
    "nested": {"z": {"b": [], "a": {}}, "é": None, "A": [True, False, {"k": [1, [2, [3.5]]]}]},
    "timestamp": "2025-03-01T10:00:00.000005+02:00",
}


def ticket_row(n: int, ticket_id: str = "T-1", metadata: dict[str, Any] | None = None) -> store.AuditRow:
    payload = builders.ticket(ticket_id=ticket_id, metadata=AWKWARD if metadata is None else metadata)
    event = TicketReceivedV1(
        ticket_id=ticket_id, tenant_id="acme", payload=payload, producer=builders.PRODUCER
    )
    row = to_row(TOPIC, n % 3, n, serialization.dumps(event))
    assert row is not None
    return row


@dataclass
class Audit:
    url: str
    pool: asyncpg.Pool
    signer: Signer
    keys_dir: Path  # <kid>.key and <kid>.pub, as the stack writes them
    checkpoint_dir: Path

    @property
    def keys(self) -> dict[str, Ed25519PublicKey]:
        return {self.signer.kid: self.signer.key.public_key()}

    async def append(self, rows: list[store.AuditRow]) -> ChainHead | None:
        """What the trace sink does with a batch: append, then sign the head (interval 0: every batch)."""
        head = await store.append(self.pool, rows)
        if head is not None:
            await Checkpointer(self.signer, self.checkpoint_dir, interval_s=0).note(head)
        return head

    async def verify(self, checkpoints: bool = True) -> VerifyReport:
        conn = await connect(self.url)
        try:
            return await verify(conn, self.checkpoint_dir if checkpoints else None, self.keys)
        finally:
            await conn.close()

    async def tamper(self, sql: str, *args: Any) -> None:
        await tamper_as_superuser(self.url, sql, *args)

    async def rows(self) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM audit.events ORDER BY position")


@asynccontextmanager
async def open_audit(database_url: str, tmp_path: Path) -> AsyncIterator[Audit]:
    """An Audit on a database that is already migrated."""
    pool = await create_pool(database_url, max_size=4)
    key_file, _ = generate_keypair(tmp_path / "keys", "audit-test")
    signer = load_signer(key_file, None, None, ttl_s=0)
    assert signer is not None
    try:
        yield Audit(database_url, pool, signer, tmp_path / "keys", tmp_path / "checkpoints")
    finally:
        await pool.close()


@pytest.fixture
async def audit(database_url: str, tmp_path: Path) -> AsyncIterator[Audit]:
    await migrate(database_url)
    async with open_audit(database_url, tmp_path) as opened:
        yield opened


async def chain_of_ten(audit: Audit) -> list[asyncpg.Record]:
    """Ten events in batches of 3, 3, 3, 1: checkpoints at positions 3, 6, 9 and 10."""
    rows = [ticket_row(n, ticket_id=f"T-{n % 2}") for n in range(10)]
    for start in range(0, 10, 3):
        await audit.append(rows[start : start + 3])
    stored = await audit.rows()
    assert [r["position"] for r in stored] == list(range(1, 11))
    assert (await audit.verify()).ok
    return stored


# ---- writing ------------------------------------------------------------------------------------------


async def test_concurrent_writers_with_redeliveries_leave_one_gap_free_chain(audit: Audit) -> None:
    rows = [ticket_row(n, ticket_id=f"T-{n % 4}") for n in range(60)]
    # Two sink replicas on two connections; 20-39 reach both, and some batches repeat an event.
    first = [rows[i : i + 7] + rows[i : i + 1] for i in range(0, 40, 7)]
    second = [rows[i : i + 5] for i in range(20, 60, 5)]

    async def writer(batches: list[list[store.AuditRow]]) -> list[ChainHead | None]:
        heads = []
        for batch in batches:
            heads.append(await audit.append(batch))
            await asyncio.sleep(0)
        return heads

    heads_a, heads_b = await asyncio.gather(writer(first), writer(second))

    stored = await audit.rows()
    assert [r["position"] for r in stored] == list(range(1, 61))
    assert sorted(r["event_id"] for r in stored) == sorted(r.event_id for r in rows)
    assert [r["prev_hash"] for r in stored] == [GENESIS] + [r["hash"] for r in stored[:-1]]
    assert any(heads_a) and any(heads_b)  # both replicas extended the chain
    heads = [h for h in heads_a + heads_b if h is not None]
    assert max(h.position for h in heads) == 60
    report = await audit.verify()
    assert report.ok, report.problems
    assert report.events == 60 and report.head == ChainHead(60, stored[-1]["hash"])
    assert report.latest_checkpoint is not None and report.latest_checkpoint.position == 60

    # A full redelivery adds nothing, not even a link, and signs nothing new.
    assert await audit.append(rows) is None
    assert len(await audit.rows()) == 60
    assert (await audit.verify()).head == report.head


class OneConnection:
    """A pool of one connection, so a test can wrap a whole append in a transaction of its own."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        yield self.conn


async def test_batches_that_fail_or_never_commit_leave_no_gap_in_positions(audit: Audit) -> None:
    await audit.append([ticket_row(n) for n in range(3)])
    # jsonb refuses \u0000, so this batch fails as a whole. (decode() dead-letters such events before
    # the sink sees them; the row is built past it to make the database fail mid-batch.)
    good = ticket_row(4)
    poisoned = good._replace(event={**good.event, "payload": {**good.event["payload"], "body": "a\x00b"}})
    with pytest.raises(asyncpg.PostgresError):
        await audit.append([ticket_row(3), poisoned])
    # A batch whose rows were inserted, but whose connection died before COMMIT:
    async with audit.pool.acquire() as conn:
        lost = conn.transaction()
        await lost.start()
        await store.append(OneConnection(conn), [ticket_row(3)])  # type: ignore[arg-type]
        await lost.rollback()
    await audit.append([ticket_row(n) for n in (3, 5)])

    stored = await audit.rows()
    assert [r["position"] for r in stored] == [1, 2, 3, 4, 5]
    assert stored[-1]["seq"] > 5  # the sequence did not get its number back: seq alone has a gap
    assert (await audit.verify()).ok


async def test_ticket_events_still_reads_a_ticket_in_causal_order(audit: Audit) -> None:
    await audit.append([ticket_row(n, ticket_id="T-7") for n in range(3)] + [ticket_row(9, ticket_id="T-8")])
    events = await store.ticket_events(audit.pool, "T-7")
    assert [e["ticket_id"] for e in events] == ["T-7"] * 3
    assert events[0]["payload"]["metadata"]["unicode"] == AWKWARD["unicode"]


async def migrate_around_legacy_rows(
    conn: asyncpg.Connection, legacy: list[store.AuditRow]
) -> dict[str, str]:
    """Migrations up to 006, then `legacy` inserted as the trace sink wrote rows before 007, then 007.
    Returns the migrations by name."""
    files = dict(migration_files())
    names = sorted(files)
    for name in names[: names.index("007_audit_chain.sql")]:
        await conn.execute(files[name])
    await conn.executemany(
        """INSERT INTO audit.events (event_id, type, version, ticket_id, tenant_id, topic,
           kafka_partition, kafka_offset, occurred_at, event)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        legacy,
    )
    await conn.execute(files["007_audit_chain.sql"])
    return files


async def migrate_after_007(conn: asyncpg.Connection, files: dict[str, str]) -> None:
    names = sorted(files)
    for name in names[names.index("007_audit_chain.sql") + 1 :]:
        await conn.execute(files[name])


async def test_rows_from_before_the_chain_are_sealed_in_order_then_extended(database_url: str) -> None:
    """Migrations 007 and 008 on a non-empty table: positions now, format-2 hashes when the trace
    sink starts."""
    conn = await connect(database_url)
    try:
        legacy = [ticket_row(n) for n in range(3)]
        files = await migrate_around_legacy_rows(conn, legacy)
        positions = await conn.fetch("SELECT position FROM audit.events ORDER BY seq")
        assert [r["position"] for r in positions] == [1, 2, 3]
        await migrate_after_007(conn, files)
        before = await verify(conn)
        assert [(p.kind, p.position) for p in before.problems] == [
            ("unsealed", 1),
            ("unsealed", 2),
            ("unsealed", 3),
        ]
        # Sealing is the one UPDATE the trigger allows, and only of hashes that are still NULL.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("UPDATE audit.events SET hash = $1, topic = 'x' WHERE position = 1", bytes(32))

        pool = await create_pool(database_url, max_size=2)
        try:
            assert await store.seal(pool) == 3
            assert await store.seal(pool) == 0
            await store.append(pool, [legacy[2], ticket_row(3), ticket_row(4)])  # legacy[2] is there
        finally:
            await pool.close()
        after = await verify(conn)
        assert after.ok, after.problems
        assert after.events == 5
        versions = await conn.fetch("SELECT chain_version FROM audit.events ORDER BY position")
        assert [r["chain_version"] for r in versions] == [2] * 5  # sealed late, so purgeable
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("UPDATE audit.events SET hash = $1 WHERE position = 1", bytes(32))
    finally:
        await conn.close()


async def test_rows_hashed_in_format_1_still_verify_with_the_old_formula(
    database_url: str, tmp_path: Path
) -> None:
    """A store sealed by the trace sink before 008: those rows keep format 1, and new ones are format 2."""
    conn = await connect(database_url)
    try:
        files = await migrate_around_legacy_rows(conn, [ticket_row(n) for n in range(3)])
        prev = GENESIS
        for row in await conn.fetch("SELECT * FROM audit.events ORDER BY position"):
            # What the trace sink of 007 did: seal with the format-1 formula over the whole event.
            record = chain_record(
                row["position"],
                row["topic"],
                row["kafka_partition"],
                row["kafka_offset"],
                row["recorded_at"],
                row["event"],
            )
            link = link_hash(prev, record)
            await conn.execute(
                "UPDATE audit.events SET prev_hash = $1, hash = $2 WHERE position = $3",
                prev,
                link,
                row["position"],
            )
            prev = link
        await migrate_after_007(conn, files)
    finally:
        await conn.close()

    async with open_audit(database_url, tmp_path) as audit:
        await audit.append([ticket_row(n) for n in range(3, 5)])
        assert [r["chain_version"] for r in await audit.rows()] == [1, 1, 1, 2, 2]
        assert (await audit.verify()).ok
        # Format 1 hashes the event itself: it can never lose it, even through the retention path.
        async with audit.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL agentbus.audit_purge = 'on'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute("UPDATE audit.events SET event = NULL WHERE position = 2")
        await audit.tamper(
            """UPDATE audit.events SET event = jsonb_set(event, '{payload,order_id}', '"ORD-9"')
               WHERE position = 2"""
        )
        report = await audit.verify()
        assert [(p.kind, p.position) for p in report.problems] == [("modified", 2)]
        assert "does not match its hash" in report.problems[0].detail


# ---- tampering ------------------------------------------------------------------------------------------


async def test_updates_deletes_and_truncates_are_refused_by_the_trigger(audit: Audit) -> None:
    await chain_of_ten(audit)
    for sql in (
        "UPDATE audit.events SET event = '{}'::jsonb WHERE position = 2",
        "UPDATE audit.events SET recorded_at = now()",
        "DELETE FROM audit.events WHERE position = 10",
        "TRUNCATE audit.events",
    ):
        verb = sql.split()[0]
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"append-only: {verb} is not allowed"):
            await audit.pool.execute(sql)
    assert len(await audit.rows()) == 10
    assert (await audit.verify()).ok
    privileges = await audit.pool.fetch(
        "SELECT privilege_type FROM information_schema.role_table_grants "
        "WHERE table_schema = 'audit' AND table_name = 'events' AND grantee = 'PUBLIC'"
    )
    assert privileges == []


async def test_a_modified_event_is_named_by_position_and_event_id(audit: Audit) -> None:
    stored = await chain_of_ten(audit)
    await audit.tamper(
        """UPDATE audit.events SET event = jsonb_set(event, '{payload,order_id}', '"ORD-9999"')
           WHERE position = 4"""
    )
    report = await audit.verify()
    assert [(p.kind, p.position, p.event_id) for p in report.problems] == [
        ("modified", 4, stored[3]["event_id"])
    ]
    assert "modified after it was written" in report.problems[0].detail


async def test_a_changed_column_is_a_modification_too(audit: Audit) -> None:
    stored = await chain_of_ten(audit)
    # ticket_id is what `agentbus trace` selects on; moving an event to another ticket is tampering.
    await audit.tamper("UPDATE audit.events SET ticket_id = 'T-X' WHERE position = 7")
    report = await audit.verify()
    assert [(p.kind, p.position, p.event_id) for p in report.problems] == [
        ("modified", 7, stored[6]["event_id"])
    ]
    assert "column ticket_id is 'T-X'" in report.problems[0].detail


async def test_a_rewritten_row_with_a_recomputed_hash_breaks_the_next_link(audit: Audit) -> None:
    stored = await chain_of_ten(audit)
    row = stored[3]
    event = {**row["event"], "tenant_id": "globex"}
    digest = event_digest(event)
    forged = link_hash(row["prev_hash"], row_header({**row, "tenant_id": "globex"}, digest))
    await audit.tamper(
        """UPDATE audit.events SET event = $1::jsonb, tenant_id = 'globex', event_digest = $2, hash = $3
           WHERE position = 4""",
        orjson.dumps(event).decode(),
        digest,
        forged,
    )
    report = await audit.verify()
    assert [(p.kind, p.position) for p in report.problems] == [("relinked", 5)]
    assert "position 4" in report.problems[0].detail


async def test_history_rewritten_consistently_is_caught_by_the_signed_checkpoints(audit: Audit) -> None:
    """An attacker who knows the scheme rehashes everything from the change on: the chain is
    self-consistent, but the signed heads outside the database are not theirs to rewrite."""
    stored = await chain_of_ten(audit)
    prev = stored[3]["prev_hash"]
    for row in stored[3:]:
        event = row["event"]
        if row["position"] == 4:
            event = {**event, "payload": {**event["payload"], "order_id": "ORD-9999"}}
        digest = event_digest(event)
        link = link_hash(prev, row_header(row, digest))
        await audit.tamper(
            """UPDATE audit.events SET event = $1::jsonb, event_digest = $2, prev_hash = $3, hash = $4
               WHERE position = $5""",
            orjson.dumps(event).decode(),
            digest,
            prev,
            link,
            row["position"],
        )
        prev = link

    assert (await audit.verify(checkpoints=False)).ok  # the chain alone cannot tell
    report = await audit.verify()
    assert [(p.kind, p.position) for p in report.problems] == [
        ("checkpoint_mismatch", 6),
        ("checkpoint_mismatch", 9),
        ("checkpoint_mismatch", 10),
    ]
    assert "history up to here was rewritten" in report.problems[0].detail


async def test_a_deleted_row_is_named_as_the_gap(audit: Audit) -> None:
    stored = await chain_of_ten(audit)
    await audit.tamper("DELETE FROM audit.events WHERE position = 5")
    report = await audit.verify()
    assert [(p.kind, p.position, p.event_id) for p in report.problems] == [
        ("deleted", 5, stored[5]["event_id"])
    ]
    assert "position 5 missing" in report.problems[0].detail


async def test_a_truncated_tail_is_caught_only_by_the_signed_checkpoint(audit: Audit) -> None:
    stored = await chain_of_ten(audit)
    await audit.tamper("DELETE FROM audit.events WHERE position > 7")
    assert (await audit.verify(checkpoints=False)).ok  # what is left is a valid chain
    report = await audit.verify()
    assert [(p.kind, p.position) for p in report.problems] == [("truncated", 8)]
    detail = report.problems[0].detail
    assert f"ends at position 7 (event {stored[6]['event_id']})" in detail
    assert "covers position 10" in detail


async def test_an_emptied_store_is_caught_by_the_signed_checkpoint(audit: Audit) -> None:
    await chain_of_ten(audit)
    await audit.tamper("DELETE FROM audit.events")
    report = await audit.verify()
    assert [(p.kind, p.position) for p in report.problems] == [("truncated", 1)]
    assert "the chain ends empty" in report.problems[0].detail


async def test_a_forged_checkpoint_is_reported_and_not_trusted(audit: Audit) -> None:
    await chain_of_ten(audit)
    # Someone without the key claims a longer chain, to make an intact store look truncated.
    line = orjson.loads((audit.checkpoint_dir / "checkpoints.jsonl").read_bytes().splitlines()[-1])
    with (audit.checkpoint_dir / "checkpoints.jsonl").open("ab") as f:
        f.write(orjson.dumps(line | {"position": 50}) + b"\n")
    report = await audit.verify()
    assert [p.kind for p in report.problems] == ["bad_checkpoint"]
    assert "bad signature" in report.problems[0].detail and "position 50" in report.problems[0].detail
    assert report.latest_checkpoint is not None and report.latest_checkpoint.position == 10


# ---- the jsonb round trip ----------------------------------------------------------------------------------


async def test_awkward_values_hash_the_same_after_the_jsonb_round_trip(audit: Audit) -> None:
    await audit.append([ticket_row(1)])
    stored = (await audit.rows())[0]["event"]["payload"]["metadata"]
    # The stored value really is different text (so a naive hash of the JSON would break) …
    assert orjson.dumps(stored, option=orjson.OPT_SORT_KEYS) != orjson.dumps(
        AWKWARD, option=orjson.OPT_SORT_KEYS
    )
    assert stored["floats"][1] == 10**16 and isinstance(stored["floats"][1], int)
    # … and the canonical bytes are not.
    assert canonical_bytes(stored) == canonical_bytes(AWKWARD)


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
    | st.datetimes(timezones=st.sampled_from([UTC, None]))
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=6),
            children,
            max_size=4,
        )
    ),
    max_leaves=25,
)


@dataclass
class Roundtrip:
    loop: asyncio.AbstractEventLoop
    conn: asyncpg.Connection


@pytest.fixture(scope="module")
def roundtrip() -> Iterator[Roundtrip]:
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(connect(SERVER_URL))
    loop.run_until_complete(conn.execute("CREATE TEMP TABLE roundtrip (value jsonb)"))
    yield Roundtrip(loop, conn)
    loop.run_until_complete(conn.close())
    loop.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_any_json_value_hashes_the_same_after_the_jsonb_round_trip(roundtrip: Roundtrip, value: Any) -> None:
    # What the writer hashes: the value as its JSON text parses (datetimes become strings there).
    written = orjson.loads(orjson.dumps(value))
    stored = roundtrip.loop.run_until_complete(
        roundtrip.conn.fetchval("INSERT INTO roundtrip VALUES ($1) RETURNING value", value)
    )
    assert canonical_bytes(stored) == canonical_bytes(written)


# ---- the command line and the stack ----------------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str]) -> Any:
    return CliRunner().invoke(cli, ["audit", "verify", *args], env=env)


async def test_cli_exits_0_when_intact_and_1_naming_the_first_bad_link(audit: Audit, tmp_path: Path) -> None:
    stored = await chain_of_ten(audit)
    keys = str(audit.keys_dir)
    args = ("--checkpoints", str(audit.checkpoint_dir), "--keys", keys, "--state-dir", str(tmp_path))
    env = {"DATABASE_URL": audit.url}

    ok = await asyncio.to_thread(run_cli, *args, env=env)
    assert ok.exit_code == 0, ok.output
    assert f"chain OK: 10 events, head {stored[-1]['hash'].hex()[:16]}" in ok.output
    assert "4 signed checkpoints, the latest at position 10" in ok.output

    await audit.tamper("DELETE FROM audit.events WHERE position = 3")
    broken = await asyncio.to_thread(run_cli, *args, env=env)
    assert broken.exit_code == 1, broken.output
    assert f"first bad link at position 3 (event {stored[3]['event_id']}): deleted" in broken.output

    as_json = await asyncio.to_thread(run_cli, *args, "--json", env=env)
    assert as_json.exit_code == 1
    report = orjson.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["problems"][0] | {"detail": None} == {
        "kind": "deleted",
        "position": 3,
        "event_id": stored[3]["event_id"],
        "detail": None,
    }


async def test_cli_without_a_database_exits_2(tmp_path: Path) -> None:
    result = await asyncio.to_thread(run_cli, "--state-dir", str(tmp_path), env={"DATABASE_URL": ""})
    assert result.exit_code == 2
    assert "no database" in result.output


async def test_the_stack_trace_sink_signs_checkpoints_that_the_cli_verifies(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
) -> None:
    async with start_stack(
        broker, server_database_url, topic_prefix, tmp_path, services=["trace-sink"]
    ) as stack:
        assert stack.supervisor is not None
        # The audit key goes to the trace sink only.
        assert "AGENTBUS_AUDIT_SIGNING_KEY_FILE" in stack.supervisor.procs["trace-sink"].env
        assert "AGENTBUS_AUDIT_SIGNING_KEY_FILE" not in stack.supervisor.env
        events = [
            TicketReceivedV1(
                ticket_id=f"T-{n}",
                tenant_id="acme",
                payload=builders.ticket(ticket_id=f"T-{n}"),
                producer=builders.PRODUCER,
            )
            for n in range(5)
        ]
        await client.publish(stack.settings(), events)
        checkpoints, _, public = audit_paths(tmp_path)
        keys = load_verify_keys(public, None)

        deadline = time.monotonic() + 30
        while True:
            count = await stack_count(server_database_url)
            signed = read_checkpoints(checkpoints, keys)[0] if checkpoints.exists() else []
            if count == 5 and max((c.position for c in signed), default=0) == 5:
                break
            assert time.monotonic() < deadline, f"{count} rows, checkpoints {signed}"
            await asyncio.sleep(0.2)

        env = {"DATABASE_URL": server_database_url}
        ok = await asyncio.to_thread(run_cli, "--state-dir", str(tmp_path), env=env)
        assert ok.exit_code == 0, ok.output
        assert "chain OK: 5 events" in ok.output

        await tamper_as_superuser(server_database_url, "DELETE FROM audit.events WHERE position = 5")
        cut = await asyncio.to_thread(run_cli, "--state-dir", str(tmp_path), env=env)
        assert cut.exit_code == 1, cut.output
        assert "first bad link at position 5: truncated" in cut.output


async def stack_count(url: str) -> int:
    conn = await connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM audit.events"))
    finally:
        await conn.close()


def test_the_stack_keeps_audit_keys_apart_from_capability_keys(tmp_path: Path) -> None:
    """Executors trust every key in keys/public; the audit key must not be one of them."""
    from agentbus.cli.stack import Stack

    env = Stack(state_dir=tmp_path).audit_env()
    key_file = Path(env["AGENTBUS_AUDIT_SIGNING_KEY_FILE"])
    signer = load_signer(key_file, None, None, ttl_s=0)
    assert signer is not None
    assert not (tmp_path / "keys" / "public").exists()
    assert list(load_verify_keys(audit_paths(tmp_path)[2], None)) == [signer.kid]
    assert Stack(state_dir=tmp_path).audit_env() == env  # one key pair per state dir

    # A fresh embedded database is a new chain: the old checkpoints are kept, but moved aside.
    checkpoints = Path(env["AGENTBUS_AUDIT_CHECKPOINT_DIR"])
    checkpoints.mkdir(parents=True)
    (checkpoints / "checkpoints.jsonl").write_text("{}\n")
    assert Stack(state_dir=tmp_path, postgres=object()).audit_env() == env  # type: ignore[arg-type]
    assert not checkpoints.exists()
    [archived] = checkpoints.parent.glob("checkpoints-*")
    assert (archived / "checkpoints.jsonl").read_text() == "{}\n"


def run_export(*args: str, env: dict[str, str]) -> Any:
    return CliRunner().invoke(cli, ["export", *args], env=env)


async def test_export_streams_a_window_as_ndjson_with_its_links(audit: Audit, tmp_path: Path) -> None:
    stored = await chain_of_ten(audit)
    env = {"DATABASE_URL": audit.url}
    base = ("--state-dir", str(tmp_path))

    everything = await asyncio.to_thread(run_export, "--since", "2000-01-01", *base, env=env)
    assert everything.exit_code == 0, everything.output
    # split("\n"), not splitlines(): the events hold U+2028 and friends, which JSON leaves raw.
    lines = [orjson.loads(line) for line in everything.stdout.split("\n") if line]
    assert [line["position"] for line in lines] == list(range(1, 11))
    assert [line["event"]["event_id"] for line in lines] == [r["event_id"] for r in stored]
    # The receiver can check the chain: each line links to the one before.
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(lines))
    assert lines[-1]["hash"] == stored[-1]["hash"].hex()
    assert "exported 10 events" in everything.stderr

    for args in (
        ("--since", "2000-01-01", "--tenant", "globex"),
        ("--since", "2000-01-01", "--until", "2000-01-02"),
    ):
        none = await asyncio.to_thread(run_export, *args, *base, env=env)
        assert none.exit_code == 0 and none.stdout == "", none.output

    bad = await asyncio.to_thread(run_export, "--since", "last tuesday", *base, env=env)
    assert bad.exit_code == 2 and "expected an ISO 8601 time" in bad.output
