"""A published event version is never edited: committed schema files are pinned by their sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from agentbus.shared.events.schemas import generate

# (type, version) → sha256 of schemas/<type>/v<version>.json as published.
# Never edit an entry. An incompatible change is a new model version (e.g. TicketReceivedV2), a new
# schema file, a new entry here, and an upcaster from the old version in
# agentbus.shared.events.registry.UPCASTERS.
PUBLISHED: dict[tuple[str, int], str] = {
    ("action.decided", 1): "7d9c7a302df0bdad1945cfd89baefec995bdd41a9fe74a089759ad35815e7612",
    ("action.executed", 1): "3cbb331b22f4771fafe4bbba288fe47c4314bc62709bc85464899cbab14425f8",
    ("action.proposed", 1): "d1238251e72ab75b9347c93b79db01d1d4af830ce6518c752db23baa1eac0e6b",
    ("action.verified", 1): "9a3bbca3547f021c9f00526694b5636f71d9162d964747110fb54df0ab7901b2",
    ("approval.decided", 1): "781f5c21b570062ac09f7329bd6ba278011b113523ffbc4cce92cbb134d25825",
    ("control.switch", 1): "99c1fa45595c7bf70f206826a001f44d7817bffadb12e6b3d9704c7241887e36",
    ("deadletter.recorded", 1): "04c0e627acb48dabb69fa4ef9a6ac95e87db17daadb24dff720ac6c5e3fb4c25",
    ("escalation.requested", 1): "7579854c054956566688377dff7d7fc8b4c65199a96fae2bf6ef7fb92f493d1d",
    ("escalation.requested", 2): "bd2d91b4ed87c659176d1559b587e5583a5dc7dc9f5ca8e349d1c48fa71e76ef",
    ("task.classified", 1): "b8ca7a8114d18b5d59f666d81f29e85b77847f2a6e5625792301c2771d57b0ab",
    ("task.classified", 2): "3ab2787391cf0054ee33834218532359776e69e2221a7b973fe78fda6edb73c9",
    ("task.finished", 1): "383cbfd4e1bf2e120ab65cd436772c879eb88948e70ca3d5bc0cd29303428c3d",
    ("task.finished", 2): "540b9771a732ad666d5eaa43cc7616c36af3f053355c9e96e670ab791560a883",
    ("ticket.received", 1): "40f53156ca33a39dfcbf0524dd0e768a41bc479506f2dae4733e2e0362ed7962",
}

ADVICE = (
    "published event versions are immutable: do not edit {rel}. Restore it, then add a new "
    "version instead (a new model such as {cls}V{next}, schemas/{type}/v{next}.json, and an "
    "upcaster for ({type!r}, {version}) in agentbus.shared.events.registry.UPCASTERS)."
)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rel(event_type: str, version: int) -> str:
    return f"{event_type}/v{version}.json"


def advice(event_type: str, version: int) -> str:
    cls = "".join(part.capitalize() for part in event_type.split("."))
    return ADVICE.format(
        rel=f"schemas/{rel(event_type, version)}",
        cls=cls,
        next=version + 1,
        type=event_type,
        version=version,
    )


@pytest.mark.parametrize(("event_type", "version"), sorted(PUBLISHED), ids=lambda v: str(v))
def test_committed_schema_is_unchanged(schemas_dir: Path, event_type: str, version: int) -> None:
    path = schemas_dir / rel(event_type, version)
    assert path.is_file(), f"schemas/{rel(event_type, version)} was deleted; " + advice(event_type, version)
    expected = PUBLISHED[(event_type, version)]
    assert sha256(path.read_bytes()) == expected, advice(event_type, version)


@pytest.mark.parametrize(("event_type", "version"), sorted(PUBLISHED), ids=lambda v: str(v))
def test_model_still_produces_the_published_schema(event_type: str, version: int) -> None:
    generated = generate().get(rel(event_type, version))
    assert generated is not None, (
        f"no model produces {event_type} v{version} any more; keep the published model and "
        "register an upcaster instead of removing it"
    )
    assert sha256(generated) == PUBLISHED[(event_type, version)], advice(event_type, version)


def test_every_committed_schema_is_pinned(schemas_dir: Path) -> None:
    committed = {(p.parent.name, int(p.stem.removeprefix("v"))) for p in schemas_dir.glob("*/v*.json")}
    unpinned = sorted(committed - set(PUBLISHED))
    assert not unpinned, (
        f"new schema versions {unpinned}: once released, add their sha256 to PUBLISHED in "
        "tests/contract/test_published_versions.py"
    )


def test_advice_names_the_fix() -> None:
    text = advice("ticket.received", 1)
    assert "schemas/ticket.received/v1.json" in text
    assert "TicketReceivedV2" in text
    assert "UPCASTERS" in text
