"""The executor refuses every capability that does not authorise exactly this action, once: forged,
tampered, expired, wrong key and replayed. Each refusal is an event; nothing executes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import builders
import pytest
from agentbus.cli import demo
from agentbus.executor.handlers import ExecutorHandlers
from agentbus.executor.store import PgEffectLedger
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import Signer, Verifier
from agentbus.shared.db import create_pool, migrate
from agentbus.shared.events import ActionDecidedV1, ActionExecutedV1, Decision, Proposal, Switch
from agentbus.shared.settings import Settings
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    executor: ExecutorHandlers
    signer: Signer
    pool: object


@pytest.fixture
async def rig(server_database_url: str) -> AsyncIterator[Rig]:
    await migrate(server_database_url)
    await demo.seed(server_database_url)
    pool = await create_pool(server_database_url)
    key = Ed25519PrivateKey.generate()
    executor = ExecutorHandlers(Bus(Settings(service="executor")), Verifier({"k1": key.public_key()}))
    executor.pool, executor.ledger = pool, PgEffectLedger(pool)
    yield Rig(executor, Signer("k1", key, ttl_s=60), pool)
    await pool.close()


def refund(amount: int = 2000) -> Proposal:
    return builders.proposal(args={"order_id": "ORD-1001", "amount_cents": amount, "currency": "USD"})


def decided(proposal: Proposal, capability: str | None) -> ActionDecidedV1:
    decision = Decision(
        proposal=proposal,
        verdict="allow",
        rule_ids=["refund.autonomous"],
        reason="§3.1",
        capability=capability,
    )
    event = builders.event(ActionDecidedV1, payload=decision)
    assert isinstance(event, ActionDecidedV1)
    return event


async def run(rig: Rig, event: ActionDecidedV1) -> ActionExecutedV1:
    [out] = await rig.executor.on_action_decided(event)
    assert isinstance(out, ActionExecutedV1)
    return out


async def effects(rig: Rig) -> tuple[int, int]:
    refunds = await rig.pool.fetchval("SELECT count(*) FROM sor.refunds")  # type: ignore[attr-defined]
    ledger = await rig.pool.fetchval("SELECT count(*) FROM executor.effects")  # type: ignore[attr-defined]
    return refunds, ledger


async def assert_refused(rig: Rig, event: ActionDecidedV1, because: str) -> None:
    out = await run(rig, event)
    assert out.payload.status == "refused"
    assert because in (out.payload.error or "")
    assert out.causation_id == event.event_id
    assert await effects(rig) == (0, 0)


async def test_a_valid_capability_executes_once_and_a_redelivery_gets_the_stored_result(rig: Rig) -> None:
    proposal = refund()
    event = decided(proposal, rig.signer.issue(proposal, "acme"))
    first = await run(rig, event)
    again = await run(rig, event)  # same decision event redelivered: not a replay
    assert first.payload.status == "succeeded" and not first.payload.duplicate
    assert again.payload.status == "succeeded" and again.payload.duplicate
    assert again.payload.result == first.payload.result
    assert await effects(rig) == (1, 1)


async def test_forged_decision_without_capability_is_refused(rig: Rig) -> None:
    await assert_refused(rig, decided(refund(), None), "no capability")


async def test_forged_signature_is_refused(rig: Rig) -> None:
    proposal = refund()
    body, _ = rig.signer.issue(proposal, "acme").split(".")
    await assert_refused(rig, decided(proposal, f"{body}.AAAA"), "bad signature")


async def test_tampered_arguments_are_refused(rig: Rig) -> None:
    token = rig.signer.issue(refund(2000), "acme")
    await assert_refused(rig, decided(refund(2500), token), "args_hash")


async def test_expired_capability_is_refused(rig: Rig) -> None:
    proposal = refund()
    token = rig.signer.issue(proposal, "acme", now=time.time() - 3600)
    await assert_refused(rig, decided(proposal, token), "expired")


async def test_capability_signed_with_another_key_is_refused(rig: Rig) -> None:
    proposal = refund()
    stranger = Signer("k1", Ed25519PrivateKey.generate())  # right key id, wrong key
    await assert_refused(rig, decided(proposal, stranger.issue(proposal, "acme")), "bad signature")
    unknown = Signer("k-unknown", Ed25519PrivateKey.generate())
    await assert_refused(rig, decided(proposal, unknown.issue(proposal, "acme")), "unknown key id")


async def test_replayed_capability_is_refused(rig: Rig) -> None:
    proposal = refund()
    token = rig.signer.issue(proposal, "acme")
    assert (await run(rig, decided(proposal, token))).payload.status == "succeeded"
    replay = await run(rig, decided(proposal, token))  # same capability, another decision event
    assert replay.payload.status == "refused" and "replay" in (replay.payload.error or "")
    assert await effects(rig) == (1, 1)


async def test_capability_for_another_tenant_is_refused(rig: Rig) -> None:
    proposal = refund()
    await assert_refused(rig, decided(proposal, rig.signer.issue(proposal, "other-tenant")), "tenant_id")


@pytest.mark.parametrize(
    ("scope", "target"),
    [("tool", "payments.issue_refund"), ("agent", "agent:refunds"), ("tenant", "acme")],
)
async def test_a_kill_switch_makes_the_executor_refuse_then_release_lets_the_same_decision_run(
    rig: Rig, scope: str, target: str
) -> None:
    proposal = refund()
    event = decided(proposal, rig.signer.issue(proposal, "acme"))
    switch = Switch(scope=scope, target=target, engaged=True, reason="incident 42", actor="sre:kim")
    rig.executor.bus.switches.apply(switch)
    out = await run(rig, event)
    assert out.payload.status == "refused"
    assert f"kill switch {scope} {target} engaged by sre:kim: incident 42" == out.payload.error
    assert await effects(rig) == (0, 0)

    # The refusal used neither the capability nor the ledger: once released, a re-drive acts once.
    rig.executor.bus.switches.apply(switch.model_copy(update={"engaged": False}))
    assert (await run(rig, event)).payload.status == "succeeded"
    assert await effects(rig) == (1, 1)


async def test_a_switch_on_another_tool_does_not_stop_this_one(rig: Rig) -> None:
    proposal = refund()
    rig.executor.bus.switches.apply(
        Switch(scope="tool", target="shipping.create_return_label", engaged=True, reason="r", actor="a")
    )
    assert (
        await run(rig, decided(proposal, rig.signer.issue(proposal, "acme")))
    ).payload.status == "succeeded"
