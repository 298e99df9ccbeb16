"""Contract-test fixtures: the repository's schemas/ and the sample events of tests/builders.py."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import builders as sample_events
import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"


@pytest.fixture(scope="session")
def builders() -> ModuleType:
    return sample_events


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    return SCHEMAS
