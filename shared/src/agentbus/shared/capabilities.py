"""Signed, short-lived, single-use capabilities: what lets an executor act on an `allow`.

A capability is Ed25519 over canonical JSON claims binding agent, tool, a hash of the exact
arguments, the idempotency key, the tenant and an expiry. Token: `<b64url claims>.<b64url sig>`.
Keys carry a key id (`kid`) so they can be rotated: the policy decider signs with one private key;
executors accept any public key they are given. The planner never holds a private key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .events import Proposal


class CapabilityError(Exception):
    """The capability does not authorise this action; the message says why (kept in the event)."""


def args_hash(args: Mapping[str, Any]) -> str:
    """SHA-256 of the arguments' canonical JSON (sorted keys): any change to them changes it."""
    return "sha256:" + hashlib.sha256(orjson.dumps(args, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Claims:
    kid: str
    jti: str
    agent: str
    tool: str
    args_hash: str
    idempotency_key: str
    action_id: str
    tenant_id: str | None
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse(token: str) -> tuple[Claims, bytes, bytes]:
    try:
        body_text, sig_text = token.split(".")
        body, signature = _unb64(body_text), _unb64(sig_text)
        return Claims(**orjson.loads(body)), body, signature
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise CapabilityError(f"malformed capability ({exc})") from exc


def read_claims(token: str) -> Claims | None:
    """The claims of a capability WITHOUT checking its signature: for display in a trace only."""
    try:
        return _parse(token)[0]
    except CapabilityError:
        return None


class Signer:
    """Issues capabilities; only the policy decider is given one."""

    def __init__(self, kid: str, key: Ed25519PrivateKey, ttl_s: float = 300.0) -> None:
        self.kid, self.key, self.ttl_s = kid, key, ttl_s

    def issue(self, proposal: Proposal, tenant_id: str | None, now: float | None = None) -> str:
        claims = Claims(
            kid=self.kid,
            jti=str(uuid.uuid4()),
            agent=proposal.agent,
            tool=proposal.tool,
            args_hash=args_hash(proposal.args),
            idempotency_key=proposal.idempotency_key,
            action_id=proposal.action_id,
            tenant_id=tenant_id,
            expires_at=(now if now is not None else time.time()) + self.ttl_s,
        )
        body = orjson.dumps(asdict(claims), option=orjson.OPT_SORT_KEYS)
        return f"{_b64(body)}.{_b64(self.key.sign(body))}"


class Verifier:
    """Checks a capability against the action it is presented with."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey], leeway_s: float = 2.0) -> None:
        self.keys = dict(keys)
        self.leeway_s = leeway_s

    def verify(
        self, token: str | None, proposal: Proposal, tenant_id: str | None, now: float | None = None
    ) -> Claims:
        if not token:
            raise CapabilityError("no capability: an allow without a signed capability is not honoured")
        claims, body, signature = _parse(token)
        key = self.keys.get(claims.kid)
        if key is None:
            raise CapabilityError(f"capability signed with unknown key id {claims.kid!r}")
        try:
            key.verify(signature, body)
        except InvalidSignature as exc:
            raise CapabilityError(f"bad signature for key id {claims.kid!r}") from exc
        # Bound to the exact action: a valid capability for anything else authorises nothing.
        expected = {
            "agent": proposal.agent,
            "tool": proposal.tool,
            "args_hash": args_hash(proposal.args),
            "idempotency_key": proposal.idempotency_key,
            "action_id": proposal.action_id,
            "tenant_id": tenant_id,
        }
        for name, value in expected.items():
            if getattr(claims, name) != value:
                raise CapabilityError(f"capability does not match the action's {name}")
        if (now if now is not None else time.time()) > claims.expires_at + self.leeway_s:
            raise CapabilityError("capability expired")
        return claims


# ---- keys: files or environment, each with a key id ------------------------------------------


def generate_keypair(directory: Path, kid: str) -> tuple[Path, Path]:
    """Write `<kid>.key` (private, 0600) and `<kid>.pub` into `directory`; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    key_path, pub_path = directory / f"{kid}.key", directory / f"{kid}.pub"
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    pub_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_path, pub_path


def load_signer(key_file: Path | None, key_env: str | None, kid: str | None, ttl_s: float) -> Signer | None:
    """The signing key from a PEM file (kid = file stem unless given) or from the environment
    (base64 of the 32-byte raw key, kid required); None when neither is configured."""
    if key_file is not None:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{key_file}: not an Ed25519 private key")
        return Signer(kid or key_file.stem, key, ttl_s)
    if key_env:
        if not kid:
            raise ValueError("AGENTBUS_SIGNING_KEY needs AGENTBUS_SIGNING_KEY_ID")
        return Signer(kid, Ed25519PrivateKey.from_private_bytes(base64.b64decode(key_env)), ttl_s)
    return None


def load_verify_keys(keys_dir: Path | None, keys_env: str | None) -> dict[str, Ed25519PublicKey]:
    """Public keys from `<kid>.pub` PEM files in a directory and/or `kid=base64raw,…` in the env."""
    keys: dict[str, Ed25519PublicKey] = {}
    if keys_dir is not None and keys_dir.is_dir():
        for path in sorted(keys_dir.glob("*.pub")):
            key = serialization.load_pem_public_key(path.read_bytes())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"{path}: not an Ed25519 public key")
            keys[path.stem] = key
    for item in filter(None, (keys_env or "").split(",")):
        kid, _, raw = item.partition("=")
        keys[kid.strip()] = Ed25519PublicKey.from_public_bytes(base64.b64decode(raw.strip()))
    return keys
