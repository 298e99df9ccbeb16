"""`agentbus approvals` failing before or at the connection: where the API is, token, reason."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from agentbus.cli.approvals import render
from agentbus.cli.main import app
from agentbus.cli.runtime import RuntimeInfo, free_port
from typer.testing import CliRunner


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("AGENTBUS_APPROVALS_URL", "AGENTBUS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AGENTBUS_STATE_DIR", str(tmp_path))
    return tmp_path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["approvals", *args])
    return result.exit_code, result.output


def write_runtime(state: Path, **extra: object) -> None:
    info = {
        "bootstrap": "127.0.0.1:1",
        "database_url": "postgresql://nowhere/db",
        "console_url": "http://127.0.0.1:1",
        "topic_prefix": "",
        "supervisor_pid": 1,
        "services": [],
        **extra,
    }
    (state / "runtime.json").write_bytes(orjson.dumps(info))


def test_without_a_stack_it_says_how_to_find_the_api(state: Path) -> None:
    code, out = invoke("list", "--token", "t")
    assert code == 2 and "no approvals API found" in out and "AGENTBUS_APPROVALS_URL" in out


def test_a_runtime_file_from_before_approvals_still_loads(state: Path) -> None:
    write_runtime(state)
    info = RuntimeInfo.load(state / "runtime.json")
    assert info is not None and info.approvals_url is None
    assert "no approvals API found" in invoke("list", "--token", "t")[1]


def test_the_url_comes_from_runtime_json(state: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    write_runtime(state, approvals_url=url)
    code, out = invoke("show", "AP-1", "--token", "t")
    assert code == 2 and f"cannot reach the approvals API at {url}" in out


def test_a_token_is_needed(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTBUS_APPROVALS_URL", "http://127.0.0.1:1")
    code, out = invoke("approve", "AP-1")
    assert code == 2 and "AGENTBUS_TOKEN" in out


def test_a_rejection_needs_a_reason(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTBUS_APPROVALS_URL", "http://127.0.0.1:1")
    code, out = invoke("reject", "AP-1", "--token", "t")
    assert code == 2 and "--reason" in out
    code, out = invoke("reject", "AP-1", "--token", "t", "--reason", "  ")
    assert code == 2 and "needs a reason" in out


def test_show_renders_the_change_and_the_decision() -> None:
    approval = {
        "id": "AP-1",
        "status": "rejected",
        "ticket_id": "T-1",
        "tenant_id": "acme",
        "action_id": "act-T-1-1",
        "tool": "payments.issue_refund",
        "agent": "agent:refunds",
        "idempotency_key": "acme:T-1:1:payments.issue_refund",
        "reason": "Needs approval under §3.2",
        "rule_ids": ["refund.needs_approval"],
        "policy_version": "sha256:abc",
        "required_role": "refund-approver",
        "created_at": "2025-01-01T00:00:00+00:00",
        "expires_at": "2025-01-01T01:00:00+00:00",
        "preview": "payments.issue_refund as agent:refunds\n+ amount_cents = 4000",
        "approver": "user:alice",
        "decided_at": "2025-01-01T00:10:00+00:00",
        "decided_reason": "no",
    }
    text = render(approval)
    assert "AP-1  rejected  (needs role refund-approver)" in text
    assert "  + amount_cents = 4000" in text
    assert text.splitlines()[-1] == "decided   rejected by user:alice at 2025-01-01T00:10:00+00:00: no"
