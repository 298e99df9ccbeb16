"""CLI ticket input: `ticket_event` and `agentbus submit` failing before any connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import builders
import orjson
import pytest
from agentbus.cli.client import CLI_PRODUCER, BadTicket, ticket_event
from agentbus.cli.main import app
from agentbus.shared.events import TicketReceivedV1
from typer.testing import CliRunner


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No stack to connect to: a failure after input checks would show up as 'no running stack'."""
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "AGENTBUS_TOPIC_PREFIX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AGENTBUS_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def submit(path: Path) -> Any:
    return CliRunner().invoke(app, ["submit", str(path)])


def test_valid_ticket() -> None:
    event = ticket_event(builders.ticket_dict(ticket_id="T-77"))
    assert isinstance(event, TicketReceivedV1)
    assert event.ticket_id == "T-77"
    assert event.tenant_id == "acme"
    assert event.payload.ticket_id == "T-77"
    assert event.producer == CLI_PRODUCER
    assert event.causation_id is None


def test_missing_customer_names_the_field() -> None:
    data = builders.ticket_dict()
    del data["customer"]
    with pytest.raises(BadTicket, match="customer: Field required"):
        ticket_event(data)


def test_bad_channel_names_the_field() -> None:
    with pytest.raises(BadTicket, match="channel"):
        ticket_event({**builders.ticket_dict(), "channel": "pigeon"})


def test_nested_field_is_named_with_its_path() -> None:
    data = builders.ticket_dict()
    data["customer"] = {"id": "C-1"}
    with pytest.raises(BadTicket, match=r"customer\.email"):
        ticket_event(data)


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(BadTicket, match="priority"):
        ticket_event({**builders.ticket_dict(), "priority": "high"})


def test_submit_missing_file(isolated: Path) -> None:
    result = submit(isolated / "nope.json")
    assert result.exit_code == 2
    assert "no such file" in result.output
    assert "no running stack" not in result.output


def test_submit_invalid_json(isolated: Path) -> None:
    path = isolated / "bad.json"
    path.write_text("{ticket_id: T-1,")
    result = submit(path)
    assert result.exit_code == 2
    assert "not valid JSON" in result.output


def test_submit_json_that_is_not_an_object(isolated: Path) -> None:
    path = isolated / "list.json"
    path.write_bytes(orjson.dumps([builders.ticket_dict()]))
    result = submit(path)
    assert result.exit_code == 2
    assert "must be a JSON object" in result.output


def test_submit_ticket_missing_fields(isolated: Path) -> None:
    data = builders.ticket_dict()
    del data["tenant_id"]
    path = isolated / "ticket.json"
    path.write_bytes(orjson.dumps(data))
    result = submit(path)
    assert result.exit_code == 2
    assert "tenant_id" in result.output
    assert "no running stack" not in result.output


def test_submit_valid_ticket_without_a_stack_says_so(isolated: Path) -> None:
    path = isolated / "ticket.json"
    path.write_bytes(orjson.dumps(builders.ticket_dict()))
    result = submit(path)
    assert result.exit_code == 2
    assert "no running stack" in result.output
