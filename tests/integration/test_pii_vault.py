"""The PII vault on real Postgres: tokens in, originals encrypted per subject, and forget() shreds them."""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from agentbus.shared.db import create_pool, migrate
from agentbus.shared.pii import TOKEN, PiiVault, PiiVaultError, load_or_create_master_key

pytestmark = pytest.mark.integration

TENANT = "acme"
EMAIL = "jane.doe@example.com"
PHONE = "+1 415-555-0132"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
ADDRESS = "1600 Amphitheatre Parkway, Mountain View, CA 94043"
SUBJECT_TEXT = f"Refund for ORD-1001 please, I'm {EMAIL}, card {CARD}"
BODY_TEXT = f"Call {PHONE} or mail {EMAIL}. IBAN {IBAN}. Ship to {ADDRESS}"
ORIGINALS = [EMAIL, PHONE, CARD, IBAN, ADDRESS, "4111111111111111", "DE89370400440532013000"]
MASTER_KEY = bytes(range(32))


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    pool = await create_pool(database_url)
    try:
        yield pool
    finally:
        await pool.close()


async def stored_text(pool: asyncpg.Pool) -> str:
    """Every row of both vault tables as text, bytea included (hex), to look for leaked originals."""
    rows = await pool.fetch(
        "SELECT t::text AS row FROM pii.values t UNION ALL SELECT t::text FROM pii.subject_keys t"
    )
    return "\n".join(r["row"] for r in rows)


def leaked(text: str) -> list[str]:
    hexed = text.lower()
    return [o for o in ORIGINALS if o in text or o.encode().hex() in hexed]


async def test_protect_replaces_every_value_by_a_token_that_reveals_the_original(pool: asyncpg.Pool) -> None:
    vault = PiiVault(pool, MASTER_KEY)
    protected = await vault.protect(TENANT, "cust-1", {"subject": SUBJECT_TEXT, "body": BODY_TEXT})

    kinds = [kind for _, kind in protected.tokens]
    assert kinds == ["email", "card", "phone", "iban", "address"]
    assert all(TOKEN.fullmatch(token) for token, _ in protected.tokens)
    for text in protected.texts.values():
        assert not [o for o in ORIGINALS if o in text]
    assert protected.texts["subject"].startswith("Refund for ORD-1001 please, I'm [pii:email:")
    assert [m.group("kind") for m in TOKEN.finditer(protected.texts["body"])] == [
        "phone",
        "email",
        "iban",
        "address",
    ]
    revealed = {token: await vault.reveal(TENANT, token) for token, _ in protected.tokens}
    assert list(revealed.values()) == [EMAIL, CARD, PHONE, IBAN, ADDRESS]
    # Stored encrypted: no original is readable in the vault's tables, in text or as bytes.
    assert leaked(await stored_text(pool)) == []


async def test_texts_without_pii_come_back_unchanged_and_create_no_key(pool: asyncpg.Pool) -> None:
    vault = PiiVault(pool, MASTER_KEY)
    protected = await vault.protect(TENANT, "cust-1", {"body": "Refund ORD-1001: $20.00 (2000 cents)"})
    assert protected.texts == {"body": "Refund ORD-1001: $20.00 (2000 cents)"} and protected.tokens == []
    assert await pool.fetchval("SELECT count(*) FROM pii.subject_keys") == 0


async def test_one_value_gets_one_token_per_subject_and_another_for_another_subject(
    pool: asyncpg.Pool,
) -> None:
    vault = PiiVault(pool, MASTER_KEY)
    first = await vault.protect(TENANT, "cust-1", {"a": f"mail {EMAIL}", "b": f"again: {EMAIL}"})
    later = await vault.protect(TENANT, "cust-1", {"c": f"still {EMAIL}"})
    other = await vault.protect(TENANT, "cust-2", {"a": f"mail {EMAIL}"})

    assert [kind for _, kind in first.tokens] == ["email"]
    token = first.tokens[0][0]
    assert first.texts == {"a": f"mail {token}", "b": f"again: {token}"}
    assert later.tokens == [(token, "email")]
    other_token = other.tokens[0][0]
    assert other_token != token
    assert await vault.reveal(TENANT, token) == EMAIL and await vault.reveal(TENANT, other_token) == EMAIL
    assert await pool.fetchval("SELECT count(*) FROM pii.values") == 2
    # Tokens are per tenant: another tenant cannot reveal them.
    assert await vault.reveal("globex", token) is None


async def test_concurrent_first_protects_of_one_subject_share_one_key(pool: asyncpg.Pool) -> None:
    vault = PiiVault(pool, MASTER_KEY)
    texts = {"t": f"hi {EMAIL}"}
    results = await asyncio.gather(*(vault.protect(TENANT, "cust-new", texts) for _ in range(4)))
    assert len({r.texts["t"] for r in results}) == 1
    assert await pool.fetchval("SELECT count(*) FROM pii.subject_keys WHERE subject_id = 'cust-new'") == 1


async def test_forget_shreds_the_subject_and_a_later_protect_starts_a_new_key(pool: asyncpg.Pool) -> None:
    vault = PiiVault(pool, MASTER_KEY)
    gone = await vault.protect(TENANT, "cust-1", {"subject": SUBJECT_TEXT, "body": BODY_TEXT})
    kept = await vault.protect(TENANT, "cust-2", {"body": "reach me at bob@example.org"})

    assert await vault.forget(TENANT, "cust-1") == 5
    for token, _ in gone.tokens:
        assert await vault.reveal(TENANT, token) is None
    stored = await stored_text(pool)
    assert leaked(stored) == [] and "cust-1" not in stored
    assert await vault.reveal(TENANT, kept.tokens[0][0]) == "bob@example.org"
    assert await vault.forget(TENANT, "cust-1") == 0

    again = await vault.protect(TENANT, "cust-1", {"subject": SUBJECT_TEXT})
    assert [kind for _, kind in again.tokens] == ["email", "card"]
    (email_token, _), (card_token, _) = again.tokens
    assert email_token not in {token for token, _ in gone.tokens}  # a fresh data key, fresh tokens
    assert await vault.reveal(TENANT, email_token) == EMAIL and await vault.reveal(TENANT, card_token) == CARD


async def test_a_wrong_master_key_is_a_clear_error_not_a_silent_none(pool: asyncpg.Pool) -> None:
    protected = await PiiVault(pool, MASTER_KEY).protect(TENANT, "cust-1", {"t": f"mail {EMAIL}"})
    wrong = PiiVault(pool, secrets.token_bytes(32))
    with pytest.raises(PiiVaultError, match="master key does not open the data key of subject cust-1"):
        await wrong.reveal(TENANT, protected.tokens[0][0])
    with pytest.raises(PiiVaultError, match="master key"):
        await wrong.protect(TENANT, "cust-1", {"t": f"mail {EMAIL}"})


async def test_unknown_and_malformed_tokens_reveal_nothing(pool: asyncpg.Pool) -> None:
    vault = PiiVault(pool, MASTER_KEY)
    assert await vault.reveal(TENANT, "[pii:email:0123456789abcdef]") is None
    assert await vault.reveal(TENANT, "' OR 1=1 --") is None


def test_master_key_is_created_once_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pii.key"
    key = load_or_create_master_key(path)
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_master_key(path) == key
    assert sorted(p.name for p in path.parent.iterdir()) == ["pii.key"]

    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 31)
    with pytest.raises(ValueError, match="32 raw bytes, this file has 31"):
        load_or_create_master_key(short)
    with pytest.raises(ValueError, match="must be 32 bytes"):
        PiiVault(None, b"x" * 16)  # type: ignore[arg-type]
