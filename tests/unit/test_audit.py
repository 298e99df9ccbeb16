"""The audit chain's pure parts: canonical bytes, checkpoint signing and reading, and when the
trace sink signs (no database; the jsonb round trip is in tests/integration/test_audit_chain.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from agentbus.shared.audit import (
    CHECKPOINT_FILE,
    ChainHead,
    append_checkpoint,
    canonical_bytes,
    checkpoint_line,
    instant,
    read_checkpoints,
)
from agentbus.shared.capabilities import Signer
from agentbus.trace_sink.checkpoints import Checkpointer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def test_canonical_bytes_sort_keys_and_leave_out_whitespace() -> None:
    assert canonical_bytes({"b": [1, {"d": None, "c": True}], "a": "x"}) == (
        b'{"a":"x","b":[1,{"c":true,"d":null}]}'
    )
    assert canonical_bytes({"é": 1, "z": 2, "Z": 3}) == '{"Z":3,"z":2,"é":1}'.encode()


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (1.0, b"1"),
        (1e16, b"10000000000000000"),
        (10**16, b"10000000000000000"),
        (1e23, b"100000000000000000000000"),  # the float is 99999999999999991611392; jsonb keeps "1e23"
        (0.1, b"0.1"),
        (1.5e-7, b"0.00000015"),
        (-2.5, b"-2.5"),
        (-0.0, b"0"),
        (0, b"0"),
        (2**64 - 1, b"18446744073709551615"),
        (123.456, b"123.456"),
    ],
)
def test_canonical_numbers_are_their_decimal_value_whatever_their_type(number: float, text: bytes) -> None:
    assert canonical_bytes(number) == text


def test_canonical_strings_keep_unicode_and_escape_controls() -> None:
    assert canonical_bytes('é "q" \\ \n\x01 😀') == '"é \\"q\\" \\\\ \\n\\u0001 😀"'.encode()


def test_canonical_bytes_refuse_what_json_cannot_hold() -> None:
    with pytest.raises(TypeError):
        canonical_bytes({"at": datetime.now(UTC)})
    with pytest.raises(TypeError):
        canonical_bytes({1: "x"})
    with pytest.raises(ValueError):
        canonical_bytes(float("nan"))


def test_instants_are_utc_with_microseconds() -> None:
    moment = datetime(2025, 3, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert instant(moment) == "2025-03-01T10:00:00.000005Z"
    with pytest.raises(ValueError):
        instant(datetime(2025, 3, 1))


def signer(kid: str = "audit-1") -> Signer:
    return Signer(kid, Ed25519PrivateKey.generate())


def test_a_checkpoint_reads_back_only_with_its_key_and_unaltered(tmp_path: Path) -> None:
    good, other = signer(), signer()
    head = ChainHead(7, bytes(range(32)))
    line = checkpoint_line(good, head, datetime(2025, 1, 1, tzinfo=UTC))
    append_checkpoint(tmp_path, line)
    forged = orjson.loads(line) | {"position": 70}
    append_checkpoint(tmp_path, orjson.dumps(forged) + b"\n")
    append_checkpoint(tmp_path, checkpoint_line(other, ChainHead(9, bytes(32)), datetime.now(UTC)))
    append_checkpoint(tmp_path, b"{not json\n")

    valid, problems = read_checkpoints(tmp_path, {"audit-1": good.key.public_key()})

    assert [(c.position, c.hash) for c in valid] == [(7, head.hash)]
    assert valid[0].source == f"{tmp_path / CHECKPOINT_FILE}:1"
    assert [p.kind for p in problems] == ["bad_checkpoint"] * 3
    assert "bad signature" in problems[0].detail and ":2:" in problems[0].detail
    assert "bad signature" in problems[1].detail  # same kid, another key
    assert "malformed" in problems[2].detail


async def test_the_sink_signs_at_most_once_per_interval_and_signs_the_last_head_when_it_ends(
    tmp_path: Path,
) -> None:
    key = signer()
    checkpoints = Checkpointer(key, tmp_path, interval_s=0.3)

    def signed() -> list[int]:
        valid, problems = read_checkpoints(tmp_path, {key.kid: key.key.public_key()})
        assert not problems
        return [c.position for c in valid]

    await checkpoints.note(ChainHead(1, bytes(32)))
    await checkpoints.note(ChainHead(2, bytes(32)))
    await checkpoints.note(ChainHead(3, bytes(32)))
    assert signed() == [1]  # 2 and 3 came within the interval
    await asyncio.sleep(0.5)
    assert signed() == [1, 3]  # the newest head, once the interval ended; 2 was superseded
    await checkpoints.note(ChainHead(4, bytes(32)))
    await checkpoints.flush()
    assert signed() == [1, 3, 4]


async def test_without_a_key_the_sink_signs_nothing(tmp_path: Path) -> None:
    checkpoints = Checkpointer(None, tmp_path, interval_s=0)
    await checkpoints.note(ChainHead(1, bytes(32)))
    await checkpoints.flush()
    assert read_checkpoints(tmp_path, {}) == ([], [])
