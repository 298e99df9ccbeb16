"""`agentbus policy check|explain|versions` as an operator runs them."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
from agentbus.cli.main import app
from typer.testing import CliRunner

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, ["policy", *args], env=env)


def test_check_passes_the_repository_bundles() -> None:
    result = run("check", env={"AGENTBUS_POLICIES_DIR": str(POLICIES)})
    assert result.exit_code == 0, result.output
    assert "workflow refunds" in result.output and "workflow it_access" in result.output
    assert result.output.count("version sha256:") == 2


def test_check_rejects_a_malformed_bundle_naming_file_line_and_problem(tmp_path: Path) -> None:
    bundle = tmp_path / "refunds"
    shutil.copytree(POLICIES / "refunds", bundle)
    cedar = bundle / "rules.cedar"
    cedar.write_text(
        cedar.read_text().replace(
            "forbid (principal, action, resource)", "forbid (principal, action resource)", 1
        )
    )
    broken_line = next(
        n
        for n, line in enumerate(cedar.read_text().splitlines(), 1)
        if '@id("tenant.order_mismatch")' in line
    )
    toml = bundle / "bundle.toml"
    toml.write_text(toml.read_text() + '\n[tools.schemas."payments.issue_refund"]\ntype = "integr"\n')
    result = run("check", str(bundle))
    assert result.exit_code == 1
    assert f"{cedar}:{broken_line}: Cedar syntax" in result.output
    assert f"{toml}:" in result.output and "schema for 'payments.issue_refund' is invalid" in result.output


def test_explain_shows_the_rules_that_fire_and_the_verdict() -> None:
    facts = {
        "order": {
            "found": True,
            "tenant_id": "acme",
            "amount_cents": 4000,
            "refunded_cents": 0,
            "status": "delivered",
            "currency": "USD",
        }
    }
    result = run(
        "explain",
        "--workflow",
        "refunds",
        "--tool",
        "payments.issue_refund",
        "--args",
        '{"order_id": "ORD-1002", "amount_cents": 4000, "currency": "USD"}',
        "--facts",
        orjson.dumps(facts).decode(),
        env={"AGENTBUS_POLICIES_DIR": str(POLICIES)},
    )
    assert result.exit_code == 0, result.output
    assert "refund.needs_approval → needs_approval" in result.output
    assert "rules.cedar:" in result.output and '@verdict("needs_approval")' in result.output
    assert "verdict  needs_approval (refund.needs_approval)" in result.output
    assert "§3.2" in result.output


def test_explain_rejects_bad_json_with_a_clear_message() -> None:
    result = run(
        "explain",
        "--workflow",
        "refunds",
        "--tool",
        "orders.get_order",
        "--args",
        "{nope",
        env={"AGENTBUS_POLICIES_DIR": str(POLICIES)},
    )
    assert result.exit_code == 2 and "--args is not valid JSON" in result.output
