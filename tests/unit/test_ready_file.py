"""A process starting again (a container restarted in its pod, keeping its volumes) does not look
ready from the ready file its previous run left, until its consumers have joined again."""

from __future__ import annotations

from pathlib import Path

from agentbus.shared.bus import Bus
from agentbus.shared.settings import Settings


def test_a_new_bus_removes_the_previous_runs_ready_file(tmp_path: Path) -> None:
    ready = tmp_path / "ready" / "verifier"
    ready.parent.mkdir()
    ready.touch()
    bus = Bus(Settings(service="verifier", kafka_bootstrap_servers="127.0.0.1:1", ready_file=ready))
    assert not ready.exists()
    bus.mark_ready()
    assert ready.exists()
