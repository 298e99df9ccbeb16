"""Capability signing and verification: binding to the exact action, key ids and key loading."""

from __future__ import annotations

import base64

import builders
import pytest
from agentbus.shared.capabilities import (
    CapabilityError,
    Signer,
    Verifier,
    args_hash,
    generate_keypair,
    load_signer,
    load_verify_keys,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def test_args_hash_ignores_key_order_but_not_values() -> None:
    assert args_hash({"a": 1, "b": 2}) == args_hash({"b": 2, "a": 1})
    assert args_hash({"a": 1}) != args_hash({"a": 2})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tool", "payments.wire_transfer"),
        ("agent", "agent:other"),
        ("idempotency_key", "acme:T-1:9:payments.issue_refund"),
        ("action_id", "act-T-1-9"),
    ],
)
def test_a_capability_authorises_only_the_action_it_was_issued_for(field: str, value: str) -> None:
    key = Ed25519PrivateKey.generate()
    proposal = builders.proposal()
    token = Signer("k", key).issue(proposal, "acme")
    other = proposal.model_copy(update={field: value})
    with pytest.raises(CapabilityError, match=field):
        Verifier({"k": key.public_key()}).verify(token, other, "acme")
    assert Verifier({"k": key.public_key()}).verify(token, proposal, "acme").tool == proposal.tool


def test_garbage_tokens_are_refused_not_crashes() -> None:
    verifier = Verifier({"k": Ed25519PrivateKey.generate().public_key()})
    for token in ("", "abc", "a.b.c", "!!!.???", base64.urlsafe_b64encode(b"[]").decode() + ".AA"):
        with pytest.raises(CapabilityError):
            verifier.verify(token, builders.proposal(), "acme")


def test_keys_from_files_rotate_by_key_id(tmp_path) -> None:
    old_key, old_pub = generate_keypair(tmp_path / "old", "k-2026-01")
    new_key, new_pub = generate_keypair(tmp_path / "new", "k-2026-02")
    public = tmp_path / "public"
    public.mkdir()
    for pub in (old_pub, new_pub):
        (public / pub.name).write_bytes(pub.read_bytes())
    verifier = Verifier(load_verify_keys(public, None))
    assert set(verifier.keys) == {"k-2026-01", "k-2026-02"}
    proposal = builders.proposal()
    for key_file in (old_key, new_key):  # both stay valid during the rotation window
        signer = load_signer(key_file, None, None, 60)
        assert signer is not None and signer.kid == key_file.stem
        verifier.verify(signer.issue(proposal, "acme"), proposal, "acme")
    assert oct(old_key.stat().st_mode & 0o777) == "0o600"


def test_keys_from_the_environment() -> None:
    key = Ed25519PrivateKey.generate()
    raw_private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signer = load_signer(None, base64.b64encode(raw_private).decode(), "env-1", 60)
    assert signer is not None
    keys = load_verify_keys(None, f"env-1={base64.b64encode(raw_public).decode()}")
    proposal = builders.proposal()
    Verifier(keys).verify(signer.issue(proposal, "acme"), proposal, "acme")
    with pytest.raises(ValueError, match="SIGNING_KEY_ID"):
        load_signer(None, base64.b64encode(raw_private).decode(), None, 60)
    assert load_signer(None, None, None, 60) is None
