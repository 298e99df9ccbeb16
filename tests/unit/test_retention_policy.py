"""Retention configuration (policies/tenants.toml over the bundles) and the format-2 chain link that lets
retention drop an event without breaking the chain (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agentbus.shared.audit import chain_header, event_digest, link_hash
from agentbus.shared.retention import UNCLASSIFIED, RetentionConfigError, RetentionPolicy, load_tenants

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def test_the_repository_tenants_file_loads() -> None:
    assert load_tenants(Path(__file__).parents[2] / "policies" / "tenants.toml") == {}


def test_a_tenant_override_wins_over_every_workflow_and_the_rest_keep_the_bundles() -> None:
    policy = RetentionPolicy({"acme": 30}, {"refunds": 365, "it_access": 730})
    assert policy.days("acme", "it_access") == 30
    assert policy.days("globex", "refunds") == 365
    # No workflow (never classified) or one no bundle names: the longest promise any bundle makes.
    assert policy.days("globex", None) == policy.days("globex", "travel") == 730
    assert policy.cutoffs("acme", NOW) == {UNCLASSIFIED: NOW - timedelta(days=30)}
    assert policy.cutoffs("globex", NOW) == {
        "it_access": NOW - timedelta(days=730),
        "refunds": NOW - timedelta(days=365),
        UNCLASSIFIED: NOW - timedelta(days=730),
    }


def test_without_workflow_bundles_there_is_no_default_to_fall_back_on() -> None:
    # A default of 0 days would purge everything of every tenant the file does not name.
    with pytest.raises(RetentionConfigError, match="no workflow bundles"):
        RetentionPolicy({"acme": 30}, {})


def test_the_tenants_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text('[tenants.acme]\nretention_days = 30\n\n[tenants."globex.eu"]\nretention_days = 3650\n')
    assert load_tenants(path) == {"acme": 30, "globex.eu": 3650}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tenants.acme\n", "not valid TOML"),
        ("[defaults]\nretention_days = 3\n", "unknown top-level key 'defaults'"),
        ("tenants = 3\n", "`tenants` must be a table"),
        ("[tenants]\nacme = 30\n", "[tenants.acme] must be a table with retention_days"),
        ("[tenants.acme]\n", "[tenants.acme]: retention_days is missing"),
        ("[tenants.acme]\nretention = 30\n", "[tenants.acme]: unknown key 'retention'"),
        ("[tenants.acme]\nretention_days = 0\n", "whole number of days >= 1, not 0"),
        ("[tenants.acme]\nretention_days = -5\n", "not -5"),
        ("[tenants.acme]\nretention_days = true\n", "not True"),
        ("[tenants.acme]\nretention_days = 30.5\n", "not 30.5"),
        ('[tenants.acme]\nretention_days = "30"\n', "not '30'"),
    ],
)
def test_a_bad_tenants_file_names_the_file_and_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tenants.toml"
    path.write_text(text)
    with pytest.raises(RetentionConfigError) as caught:
        load_tenants(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_a_missing_tenants_file_is_an_error_when_named(tmp_path: Path) -> None:
    with pytest.raises(RetentionConfigError, match="no such tenants file"):
        load_tenants(tmp_path / "absent.toml")


def header(**overrides: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "position": 4,
        "topic": "agentbus.tickets.received.v1",
        "kafka_partition": 0,
        "kafka_offset": 17,
        "recorded_at": NOW,
        "event_id": "e-4",
        "event_type": "ticket.received",
        "event_version": 1,
        "ticket_id": "T-1",
        "tenant_id": "acme",
        "occurred_at": NOW - timedelta(seconds=1),
        "digest": event_digest({"ticket_id": "T-1", "body": "hello"}),
    }
    return chain_header(**(fields | overrides))  # type: ignore[arg-type]


def test_a_format_2_link_covers_the_columns_and_the_event_only_through_its_digest() -> None:
    prev = bytes(32)
    link = link_hash(prev, header())
    # The event itself is not needed to recompute the link: only its digest is.
    assert link_hash(prev, header()) == link
    assert event_digest({"body": "hello", "ticket_id": "T-1"}) == event_digest(
        {"ticket_id": "T-1", "body": "hello"}
    )
    for change in (
        {"tenant_id": "globex"},
        {"ticket_id": "T-2"},
        {"recorded_at": NOW + timedelta(microseconds=1)},
        {"kafka_offset": 18},
        {"digest": event_digest({"ticket_id": "T-1", "body": "hellO"})},
    ):
        assert link_hash(prev, header(**change)) != link, change
