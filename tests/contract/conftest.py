"""Contract-test fixtures: the repository's schemas/ and the sample events of tests/unit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "schemas"


def _load_builders() -> ModuleType:
    """The unit tests' builders, loaded by path so this directory also runs on its own."""
    name = "agentbus_contract_builders"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "unit" / "builders.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def builders() -> ModuleType:
    return _load_builders()


@pytest.fixture(scope="session")
def schemas_dir() -> Path:
    return SCHEMAS
