"""`agentbus replay redrive` refuses bad input with a message saying what to fix, before connecting."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentbus.cli.main import app
from agentbus.shared.redrive import STAGES, stage_types
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stack to connect to: a failure after input checks would show up as 'no running stack'."""
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "AGENTBUS_TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AGENTBUS_STATE_DIR", str(tmp_path / "state"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--ticket ID (repeatable) or --since TIME"),
        (["--ticket", "T-1", "--since", "2026-11-21"], "not both"),
        (["--ticket", "T-1", "--until", "2026-11-21"], "--until needs --since"),
        (["--since", "yesterday"], "--since 'yesterday': expected an ISO 8601 time"),
        (["--since", "2026-11-21T10:00Z", "--until", "2026-11-21T09:00Z"], "is not after --since"),
        (["--ticket", "T-1", "--stage", "trace-sink"], "expected one of intake, planner, policy"),
    ],
)
def test_bad_input_says_what_to_fix(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["replay", "redrive", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_good_input_goes_on_to_look_for_the_stack() -> None:
    result = CliRunner().invoke(app, ["replay", "redrive", "--ticket", "T-1", "--stage", "executor"])
    assert result.exit_code == 2 and "no running stack found" in result.output


def test_each_stage_is_sent_what_it_consumes() -> None:
    assert stage_types("executor") == {"action.decided"}
    assert stage_types("policy") == {"action.proposed", "approval.decided", "action.executed"}
    assert stage_types("escalation") == {"escalation.requested", "action.decided"}
    assert all(stage_types(s) for s in STAGES)
