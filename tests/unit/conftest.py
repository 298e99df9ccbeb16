"""Shared fixtures for the unit tests (no broker, no database); event builders live in tests/builders.py."""

from __future__ import annotations

import builders
import pytest
from agentbus.shared.events import Producer


@pytest.fixture
def producer() -> Producer:
    return builders.PRODUCER
