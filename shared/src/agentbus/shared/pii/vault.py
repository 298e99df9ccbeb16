"""Replaces personal data in texts by tokens; keeps the originals encrypted per data subject (pii schema)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .detect import KINDS, Span, find, replace

KEY_BYTES = 32  # AES-256, for the master key and every data key
_NONCE_BYTES = 12
TOKEN = re.compile(r"\[pii:(?P<kind>" + "|".join(KINDS) + r"):(?P<digest>[0-9a-f]{16})\]")
# A concurrent forget() can delete the key between our insert and our select; after that the insert wins.
_KEY_ATTEMPTS = 3


class PiiVaultError(RuntimeError):
    """The vault cannot decrypt what it holds: the wrong master key, or a row altered in the database."""


@dataclass(frozen=True)
class Protected:
    texts: dict[str, str]  # the same names, with every detected value replaced by its token
    tokens: list[tuple[str, str]]  # (token, kind), each once, in order of first appearance


def load_or_create_master_key(path: Path) -> bytes:
    """The 32-byte master key in `path`, created (mode 0600) with random bytes when absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
        try:
            # link() never replaces: when two processes race, both end up reading the winner's key.
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ValueError(f"{path}: a PII master key is {KEY_BYTES} raw bytes, this file has {len(key)}")
    return key


class PiiVault:
    """Tokens for personal data, per (tenant, data subject); forget() shreds a subject's key and values.

    A token is `[pii:<kind>:<16 hex>]`, an HMAC of the value under the subject's data key: the same value
    gives the same token for one subject (so a model can still tell two mentions are one) and a different
    one for another subject. The audit chain keeps tokens only, so shredding breaks no hash."""

    def __init__(self, pool: asyncpg.Pool, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ValueError(f"the PII master key must be {KEY_BYTES} bytes, got {len(master_key)}")
        self._pool = pool
        self._master = AESGCM(master_key)

    async def protect(self, tenant_id: str, subject_id: str, texts: Mapping[str, str]) -> Protected:
        """Tokenize every named text in one transaction, storing the originals encrypted."""
        spans = {name: find(text) for name, text in texts.items()}
        if not any(spans.values()):
            return Protected(dict(texts), [])
        async with self._pool.acquire() as conn, conn.transaction():
            data_key = await self._data_key(conn, tenant_id, subject_id)
            found: dict[str, Span] = {}

            def tokenize(span: Span) -> str:
                token = _token(data_key, span)
                found.setdefault(token, span)
                return token

            tokenized = {name: replace(text, spans[name], tokenize) for name, text in texts.items()}
            cipher = AESGCM(data_key)
            rows = []
            for token, span in found.items():
                nonce = os.urandom(_NONCE_BYTES)
                sealed = cipher.encrypt(nonce, span.value.encode(), _aad(tenant_id, subject_id, token))
                rows.append((tenant_id, subject_id, token, span.kind, nonce, sealed))
            await conn.executemany(
                "INSERT INTO pii.values (tenant_id, subject_id, token, kind, nonce, ciphertext)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, token) DO NOTHING",
                rows,
            )
        return Protected(tokenized, [(token, span.kind) for token, span in found.items()])

    async def reveal(self, tenant_id: str, token: str) -> str | None:
        """The original behind `token`, or None when it is unknown or its subject was forgotten."""
        if not TOKEN.fullmatch(token):
            return None
        row = await self._pool.fetchrow(
            "SELECT v.subject_id, v.nonce, v.ciphertext, k.wrapped_key"
            " FROM pii.values v JOIN pii.subject_keys k USING (tenant_id, subject_id)"
            " WHERE v.tenant_id = $1 AND v.token = $2",
            tenant_id,
            token,
        )
        if row is None:
            return None
        data_key = self._unwrap(tenant_id, row["subject_id"], row["wrapped_key"])
        try:
            plain = AESGCM(data_key).decrypt(
                row["nonce"], row["ciphertext"], _aad(tenant_id, row["subject_id"], token)
            )
        except InvalidTag:
            raise PiiVaultError(f"the pii.values row of {token} ({tenant_id}) does not decrypt") from None
        return plain.decode()

    async def forget(self, tenant_id: str, subject_id: str) -> int:
        """Shred the subject's data key and delete its values; returns how many values were removed."""
        return await forget_subject(self._pool, tenant_id, subject_id)

    async def _data_key(self, conn: asyncpg.Connection, tenant_id: str, subject_id: str) -> bytes:
        """The subject's data key, created on first use; held FOR SHARE until the transaction ends."""
        fresh = self._wrap(tenant_id, subject_id, secrets.token_bytes(KEY_BYTES))
        for _ in range(_KEY_ATTEMPTS):
            # Two first protect() calls for one subject race here: one insert wins, both read its key.
            await conn.execute(
                "INSERT INTO pii.subject_keys (tenant_id, subject_id, wrapped_key) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant_id, subject_id) DO NOTHING",
                tenant_id,
                subject_id,
                fresh,
            )
            wrapped = await conn.fetchval(
                "SELECT wrapped_key FROM pii.subject_keys WHERE tenant_id = $1 AND subject_id = $2 FOR SHARE",
                tenant_id,
                subject_id,
            )
            if wrapped is not None:
                return self._unwrap(tenant_id, subject_id, wrapped)
        raise PiiVaultError(f"no data key for subject {subject_id} of tenant {tenant_id} after retries")

    def _wrap(self, tenant_id: str, subject_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._master.encrypt(nonce, data_key, _aad(tenant_id, subject_id))

    def _unwrap(self, tenant_id: str, subject_id: str, wrapped: bytes) -> bytes:
        try:
            nonce, sealed = wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:]
            return self._master.decrypt(nonce, sealed, _aad(tenant_id, subject_id))
        except InvalidTag:
            raise PiiVaultError(
                f"the PII master key does not open the data key of subject {subject_id} of tenant"
                f" {tenant_id}: is this the master key the vault was created with?"
            ) from None


async def forget_subject(pool: asyncpg.Pool | asyncpg.Connection, tenant_id: str, subject_id: str) -> int:
    """Crypto-shredding without the master key (so `agentbus forget` needs only the database):
    delete the subject's data key, then its values; returns how many values were removed."""
    conn = await pool.acquire() if isinstance(pool, asyncpg.Pool) else pool
    try:
        async with conn.transaction():
            # The key goes first: its row lock makes a concurrent protect() wait, or start a fresh key.
            await conn.execute(
                "DELETE FROM pii.subject_keys WHERE tenant_id = $1 AND subject_id = $2", tenant_id, subject_id
            )
            status = await conn.execute(
                "DELETE FROM pii.values WHERE tenant_id = $1 AND subject_id = $2", tenant_id, subject_id
            )
    finally:
        if isinstance(pool, asyncpg.Pool):
            await pool.release(conn)
    return int(status.split()[-1])


def _token(data_key: bytes, span: Span) -> str:
    digest = hmac.new(data_key, f"{span.kind}\0{span.value}".encode(), hashlib.sha256).digest()
    return f"[pii:{span.kind}:{digest[:8].hex()}]"


def _aad(*parts: str) -> bytes:
    # Binds each ciphertext to its row, so a value or wrapped key copied to another row does not open.
    return "\0".join(parts).encode()
