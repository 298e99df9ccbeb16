"""The verifier catches a system of record changed behind the executor's back; and a tool declared
once shows up in the planner's function schemas, the policy's argument validation, the executor and
the verifier."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import builders
import pytest
from agentbus.cli import demo
from agentbus.executor.handlers import ExecutorHandlers
from agentbus.executor.store import PgEffectLedger
from agentbus.planner.toolbox import function_specs
from agentbus.policy import bundles, engine
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import Signer, Verifier
from agentbus.shared.db import create_pool, migrate
from agentbus.shared.events import (
    ActionExecutedV1,
    EscalationRequestedV2,
)
from agentbus.shared.settings import Settings
from agentbus.shared.tools import load_registry
from agentbus.verifier.handlers import VerifierHandlers
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from payment_api import TOKEN, PaymentApi, declaration

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def pool(server_database_url: str) -> AsyncIterator:
    await migrate(server_database_url)
    await demo.seed(server_database_url)
    pool = await create_pool(server_database_url)
    yield pool
    await pool.close()


async def test_verifier_catches_a_refund_altered_behind_the_executors_back(pool) -> None:
    key = Ed25519PrivateKey.generate()
    signer = Signer("k", key)
    executor = ExecutorHandlers(Bus(Settings(service="executor")), Verifier({"k": key.public_key()}))
    executor.pool, executor.ledger = pool, PgEffectLedger(pool)
    verifier = VerifierHandlers(Bus(Settings(service="verifier")))
    verifier.pool = pool

    proposal = builders.proposal(args={"order_id": "ORD-1001", "amount_cents": 2000, "currency": "USD"})
    [executed] = await executor.on_action_decided(builders.allowed(signer, proposal))
    assert isinstance(executed, ActionExecutedV1) and executed.payload.status == "succeeded"
    [honest] = await verifier.on_action_executed(executed)
    assert honest.payload.verified  # type: ignore[attr-defined]

    await pool.execute(
        "UPDATE sor.refunds SET amount_cents = 200000 WHERE idempotency_key = $1", proposal.idempotency_key
    )
    verified, escalation = await verifier.on_action_executed(executed)
    assert not verified.payload.verified  # type: ignore[attr-defined]
    assert verified.payload.evidence["amount_cents"] == 200000  # type: ignore[attr-defined]
    assert isinstance(escalation, EscalationRequestedV2)
    assert escalation.payload.reason == "verification_failed"
    assert "200000" in str(escalation.payload.details["evidence"])


async def test_a_tool_declared_once_is_planned_validated_executed_and_verified(
    pool, tmp_path, monkeypatch
) -> None:
    api = PaymentApi()
    api.start()
    try:
        tools = tmp_path / "tools"
        tools.mkdir()
        (tools / "payments_api.toml").write_text(declaration(api))
        registry = load_registry(tools)
        spec = registry.get("payments_api.refund")
        assert spec is not None and spec.writes and spec.group == "payments-api"

        # The planner's function schema for a model comes from the declaration.
        [function] = function_specs(["payments_api.refund"], registry)
        assert function["function"]["name"] == "payments_api__refund"
        assert function["function"]["parameters"] == spec.args_schema

        # Policy: a workflow allows it (its own governance); argument validation is the declaration's.
        policies = tmp_path / "policies"
        shutil.copytree(REPO / "policies" / "refunds", policies / "refunds")
        toml = policies / "refunds" / "bundle.toml"
        toml.write_text(
            toml.read_text().replace("allowed = [\n", 'allowed = [\n    "payments_api.refund",\n', 1)
        )
        cedar = policies / "refunds" / "rules.cedar"
        cedar.write_text(
            cedar.read_text() + '\n@id("api.refund")\n@section("§3.9")\n'
            'permit (principal in Role::"refunder", action == Action::"payments_api.refund", resource)\n'
            "when { context.args.amount_cents <= 2500 };\n"
        )
        bundle = bundles.load(policies / "refunds", registry)
        assert "payments_api.refund" in bundle.writes
        good = builders.proposal(
            tool="payments_api.refund", args={"order_id": "ORD-1001", "amount_cents": 900}
        )
        bad = builders.proposal(
            tool="payments_api.refund", args={"order_id": "ORD-1001", "amount_cents": "900"}
        )
        assert engine.evaluate(good, bundle, ticket_id="T-1", tenant_id="acme", facts={}).rule_ids == [
            "api.refund"
        ]
        assert engine.evaluate(bad, bundle, ticket_id="T-1", tenant_id="acme", facts={}).rule_ids == [
            "args.invalid"
        ]

        # Executor and verifier act on it with nothing but the declaration (and its secret).
        monkeypatch.setenv("PAYMENTS_API_TOKEN", TOKEN)
        key = Ed25519PrivateKey.generate()
        executor = ExecutorHandlers(
            Bus(Settings(service="executor")), Verifier({"k": key.public_key()}), registry
        )
        executor.pool, executor.ledger = pool, PgEffectLedger(pool)
        [executed] = await executor.on_action_decided(builders.allowed(Signer("k", key), good))
        assert executed.payload.status == "succeeded", executed.payload.error  # type: ignore[attr-defined]
        assert api.effects[good.idempotency_key] == 1
        verifier = VerifierHandlers(Bus(Settings(service="verifier")), registry)
        verifier.pool = pool
        [verified] = await verifier.on_action_executed(executed)
        assert verified.payload.verified and verified.payload.check == "http_read_back"  # type: ignore[attr-defined]
    finally:
        api.stop()
