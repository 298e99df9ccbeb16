"""Retention per tenant on real Postgres: `agentbus audit retention` purges expired tickets' events from
the audit chain (their digests stay), shreds data subjects left with no live ticket and deletes the
tickets' task rows; the chain still verifies, and a purge by any other hand is reported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import builders
import pytest
from agentbus.cli.main import app as cli
from agentbus.shared import serialization
from agentbus.shared.audit import RETENTION_TYPE, VerifyReport, verify
from agentbus.shared.db import connect, create_pool, migrate
from agentbus.shared.events import Event, TaskClassifiedV2, TicketReceivedV1
from agentbus.shared.pii import PiiVault
from agentbus.shared.retention import RetentionPolicy
from agentbus.trace_sink import retention, store
from agentbus.trace_sink.sink import to_row
from databases import tamper_as_superuser
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

MASTER_KEY = bytes(range(32))
NOW = datetime.now(UTC)
# acme keeps 30 days (tenants file); globex is not listed, so its refunds tickets keep the bundle's 365.
TENANTS = "[tenants.acme]\nretention_days = 30\n"
POLICY = RetentionPolicy({"acme": 30}, {"refunds": 365, "it_access": 730})


@dataclass
class Store:
    url: str
    pool: asyncpg.Pool
    vault: PiiVault
    state_dir: Path
    tenants_file: Path

    async def rows(self) -> list[asyncpg.Record]:
        return await self.pool.fetch("SELECT * FROM audit.events ORDER BY position")

    async def verify(self) -> VerifyReport:
        conn = await connect(self.url)
        try:
            return await verify(conn)
        finally:
            await conn.close()

    async def tamper(self, sql: str, *args: Any) -> None:
        await tamper_as_superuser(self.url, sql, *args)

    async def cli(self, *args: str) -> Any:
        argv = ["audit", *args, "--database-url", self.url, "--state-dir", str(self.state_dir)]
        if args[0] == "retention":
            argv += ["--tenants", str(self.tenants_file)]
        return await asyncio.to_thread(CliRunner().invoke, cli, argv)


@asynccontextmanager
async def open_store(url: str, tmp_path: Path) -> AsyncIterator[Store]:
    await migrate(url)
    pool = await create_pool(url, max_size=4)
    tenants_file = tmp_path / "tenants.toml"
    tenants_file.write_text(TENANTS)
    try:
        yield Store(url, pool, PiiVault(pool, MASTER_KEY), tmp_path, tenants_file)
    finally:
        await pool.close()


@pytest.fixture
async def audit_store(database_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    """On the Postgres server and on embedded Postgres."""
    async with open_store(database_url, tmp_path) as opened:
        yield opened


@pytest.fixture
async def server_store(server_database_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(server_database_url, tmp_path) as opened:
        yield opened


async def write_ticket(
    audit: Store, tenant: str, ticket_id: str, customer: str, *days_ago: int, workflow: str = "refunds"
) -> None:
    """A received and a classified event, recorded `days_ago[0]` days ago (through the trace sink's
    append, as history), then one more event for each further entry of `days_ago`."""
    payload = builders.ticket(
        ticket_id=ticket_id, tenant_id=tenant, customer={"id": customer, "email": "[email]"}
    )
    received = TicketReceivedV1(
        ticket_id=ticket_id, tenant_id=tenant, payload=payload, producer=builders.PRODUCER
    )
    classified_payload = builders.payloads()[TaskClassifiedV2].model_copy(
        update={"customer_id": customer, "workflow": workflow}
    )
    events: list[list[Event]] = [
        [received, received.answer(TaskClassifiedV2, classified_payload, builders.PRODUCER)]
    ]
    events += [
        [received.answer(TaskClassifiedV2, classified_payload, builders.PRODUCER)] for _ in days_ago[1:]
    ]
    for batch, days in zip(events, days_ago, strict=True):
        rows = [
            to_row("agentbus.tickets.received.v1", 0, n, serialization.dumps(e)) for n, e in enumerate(batch)
        ]
        await store.append(audit.pool, [r for r in rows if r], recorded_at=NOW - timedelta(days=days))


async def personal_data(audit: Store, tenant: str, customer: str, days_ago: int) -> str:
    """The customer's email in the vault, stored `days_ago` days ago; returns its token."""
    protected = await audit.vault.protect(tenant, customer, {"body": f"mail {customer.lower()}@example.com"})
    [(token, _)] = protected.tokens
    # The vault is not append-only: its rows are aged directly (the audit rows are not).
    for table in ("pii.subject_keys", "pii.values"):
        await audit.pool.execute(
            f"UPDATE {table} SET created_at = $1 WHERE tenant_id = $2 AND subject_id = $3",
            NOW - timedelta(days=days_ago),
            tenant,
            customer,
        )
    return token


async def task_row(audit: Store, tenant: str, ticket_id: str) -> None:
    await audit.pool.execute(
        """INSERT INTO planner.tasks (ticket_id, tenant_id, workflow, state, step, context)
           VALUES ($1, $2, 'refunds', 'done', 3, '{"subject": "Refund for ORD-1001"}')""",
        ticket_id,
        tenant,
    )


async def history(audit: Store) -> dict[str, str]:
    """Two tenants' tickets; returns the vault tokens by customer."""
    await write_ticket(audit, "acme", "T-A1", "C-GONE", 40)  # expired
    await write_ticket(audit, "acme", "T-A2", "C-KEPT", 45)  # expired, but its customer has T-A3
    await write_ticket(audit, "acme", "T-A3", "C-KEPT", 5)  # live
    await write_ticket(audit, "acme", "T-A4", "C-BUSY", 40, 2)  # old, but an event 2 days ago: live
    await write_ticket(audit, "globex", "T-G1", "C-G", 40)  # globex keeps refunds for 365 days
    tokens = {c: await personal_data(audit, t, c, 50) for t, c in (("acme", "C-GONE"), ("acme", "C-KEPT"))}
    tokens["C-G"] = await personal_data(audit, "globex", "C-G", 50)
    await task_row(audit, "acme", "T-A1")
    await task_row(audit, "acme", "T-A3")
    return tokens


async def test_retention_purges_one_tenants_expired_tickets_and_the_chain_still_verifies(
    audit_store: Store,
) -> None:
    audit = audit_store
    tokens = await history(audit)
    before = await audit.rows()
    assert len(before) == 11 and (await audit.verify()).ok

    dry = await audit.cli("retention", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "acme: cutoff" in dry.output and "4 rows purged (2 tickets), 1 subjects shredded" in dry.output
    assert "dry run: nothing was changed" in dry.output
    assert [r["event"] for r in await audit.rows()] == [r["event"] for r in before]
    assert await audit.vault.reveal("acme", tokens["C-GONE"]) == "c-gone@example.com"

    started = datetime.now(UTC)
    run = await audit.cli("retention")
    assert run.exit_code == 0, run.output
    acme, globex = run.output.splitlines()
    assert acme.startswith("acme: cutoff ") and "(30 days, tenants file)" in acme
    assert "4 rows purged (2 tickets), 1 subjects shredded, 1 operational rows deleted" in acme
    assert globex.startswith("globex: cutoff ") and "refunds" in globex and "(365 days)" in globex
    assert "0 rows purged (0 tickets), 0 subjects shredded" in globex

    after = await audit.rows()
    purged = {r["ticket_id"] for r in after if r["event"] is None}
    assert purged == {"T-A1", "T-A2"}
    for old, new in zip(before, after, strict=False):  # the chain itself is untouched
        assert (new["hash"], new["event_digest"]) == (old["hash"], old["event_digest"])
        assert new["event"] is None or new["event"] == old["event"]
    [record] = [r for r in after if r["type"] == RETENTION_TYPE]
    assert record["position"] == 12 and record["tenant_id"] == "acme" and record["ticket_id"] is None
    payload = record["event"]["payload"]
    assert payload["rows_purged"] == 4 and payload["tickets"] == 2 and payload["subjects_shredded"] == 1
    assert payload["operational_rows_deleted"]["planner.tasks"] == 1
    assert (
        started - timedelta(days=30)
        <= datetime.fromisoformat(payload["cutoff"])
        <= datetime.now(UTC) - timedelta(days=30)
    )

    # The chain verifies: purged rows through their digests, covered by the retention record.
    report = await audit.verify()
    assert report.ok, report.problems
    assert report.purged == 4 and report.events == 12
    checked = await audit.cli("verify")
    assert checked.exit_code == 0, checked.output
    assert "chain OK: 12 events (4 purged by retention, checked by digest)" in checked.output

    # Crypto-shredding: the expired-only customer's data is gone; one with a live ticket keeps it.
    assert await audit.vault.reveal("acme", tokens["C-GONE"]) is None
    assert await audit.vault.reveal("acme", tokens["C-KEPT"]) == "c-kept@example.com"
    assert await audit.vault.reveal("globex", tokens["C-G"]) == "c-g@example.com"
    tasks = await audit.pool.fetch("SELECT ticket_id FROM planner.tasks ORDER BY ticket_id")
    assert [r["ticket_id"] for r in tasks] == ["T-A3"]
    assert [e["ticket_id"] for e in await store.ticket_events(audit.pool, "T-A1")] == []

    # Nothing more has expired: a second run changes nothing and records nothing.
    again = await audit.cli("retention", "--tenant", "acme")
    assert again.exit_code == 0 and "0 rows purged (0 tickets), 0 subjects shredded" in again.output
    assert len(await audit.rows()) == 12


async def test_a_purge_by_any_other_hand_is_reported(server_store: Store) -> None:
    audit = server_store
    await history(audit)
    outcome = await retention.apply(audit.pool, POLICY, "acme", datetime.now(UTC), actor="test")
    assert outcome.rows_purged == 4
    rows = {r["position"]: r for r in await audit.rows()}
    assert rows[1]["event"] is None and rows[10]["tenant_id"] == "globex"

    # A superuser with the triggers off; someone who sets the retention switch by hand for a live
    # acme row; a purged row moved to another tenant; an event changed under its digest.
    await audit.tamper("UPDATE audit.events SET event = NULL WHERE position = 10")
    async with audit.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL agentbus.audit_purge = 'on'")
        await conn.execute("UPDATE audit.events SET event = NULL WHERE position = 5")
    await audit.tamper("UPDATE audit.events SET tenant_id = 'globex' WHERE position = 1")
    await audit.tamper(
        """UPDATE audit.events SET event = jsonb_set(event, '{payload,order_id}', '"ORD-9"')
           WHERE position = 7"""
    )

    report = await audit.verify()
    assert [(p.kind, p.position) for p in report.problems] == [
        ("modified", 1),
        ("purged", 5),
        ("modified", 7),
        ("purged", 10),
    ]
    assert "columns do not match its hash" in report.problems[0].detail
    assert "no retention record of tenant 'acme'" in report.problems[1].detail
    assert "does not match its digest" in report.problems[2].detail
    assert "no retention record of tenant 'globex'" in report.problems[3].detail
    broken = await audit.cli("verify")
    assert broken.exit_code == 1
    assert f"first bad link at position 1 (event {rows[1]['event_id']}): modified" in broken.output


async def test_the_purge_function_refuses_without_a_covering_record(server_store: Store) -> None:
    audit = server_store
    await history(audit)
    # Any other UPDATE is still refused, and the function wants its record in the same transaction.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only: UPDATE"):
        await audit.pool.execute("UPDATE audit.events SET event = NULL WHERE position = 1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no retention record"):
        await audit.pool.execute("SELECT audit.purge_expired('nope', ARRAY['T-A1'])")
    # A record whose cutoff is before T-A3's events cannot purge them.
    cutoff = NOW - timedelta(days=30)
    event = {
        "event_id": "retention-1",
        "type": RETENTION_TYPE,
        "version": 1,
        "occurred_at": NOW.isoformat(),
        "ticket_id": None,
        "tenant_id": "acme",
        "payload": {"cutoff": cutoff.isoformat(), "rows_purged": 2},
    }
    row = store.AuditRow("retention-1", RETENTION_TYPE, 1, None, "acme", "x", -1, -1, NOW, event)
    async with audit.pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="at or after the cutoff"):
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", store.CHAIN_LOCK)
                await store.append_locked(conn, [row])
                await conn.execute("SELECT audit.purge_expired('retention-1', ARRAY['T-A3'])")
        # …and the counts must be the record's: T-A1 has 2 purgeable rows, the record says 3.
        with pytest.raises(asyncpg.PostgresError, match="purged 2 rows but the retention record says 3"):
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", store.CHAIN_LOCK)
                overstated = event | {"payload": {**event["payload"], "rows_purged": 3}}
                await store.append_locked(conn, [row._replace(event=overstated)])
                await conn.execute("SELECT audit.purge_expired('retention-1', ARRAY['T-A1'])")
    assert all(r["event"] is not None for r in await audit.rows())
    assert (await audit.verify()).ok


async def test_bad_input_gets_a_message_saying_what_to_fix(server_store: Store) -> None:
    audit = server_store
    await write_ticket(audit, "acme", "T-A1", "C-GONE", 40)
    future = (NOW + timedelta(days=1)).isoformat()
    for args, message in (
        (("--now", "last week"), "expected an ISO 8601 time"),
        (("--now", future), "is in the future"),
        (("--tenant", "nobody"), "--tenant 'nobody': no audit events"),
    ):
        result = await audit.cli("retention", *args)
        assert result.exit_code == 2, result.output
        assert message in result.output
    # Every check of the file is in tests/unit/test_retention_policy.py; here, that the command says it.
    audit.tenants_file.write_text("[tenants.acme]\nretention_days = 0\n")
    result = await audit.cli("retention")
    assert result.exit_code == 2, result.output
    assert f"{audit.tenants_file}: [tenants.acme]: retention_days must be a whole number" in result.output
    assert all(r["event"] is not None for r in await audit.rows())
