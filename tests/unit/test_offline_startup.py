"""Offline start-up: without a models file, intake and planner never load the model client (openai)
or retrieval (numpy), a second of CPU per process on every start and restart; with one, they build
the model-backed classifier and planner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import sys, importlib
app = importlib.import_module(sys.argv[1])
built = getattr(app, "handlers", None) or getattr(app, "intake")
model = getattr(built, "planner", None) or getattr(built, "classifier", None)
print(type(model).__name__, "openai" in sys.modules, "numpy" in sys.modules)
"""


def start(module: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENTBUS_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        env={**environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


@pytest.mark.parametrize("module", ["agentbus.planner.app", "agentbus.intake.app"])
def test_without_models_the_model_client_is_never_imported(module: str) -> None:
    kind, openai_loaded, numpy_loaded = start(module)
    assert kind != "ModelPlanner" and kind != "ModelClassifier"
    assert (openai_loaded, numpy_loaded) == ("False", "False")


@pytest.mark.parametrize(
    ("module", "expected"),
    [("agentbus.planner.app", "ModelPlanner"), ("agentbus.intake.app", "ModelClassifier")],
)
def test_with_models_the_model_backed_stage_is_built(module: str, expected: str) -> None:
    kind, openai_loaded, _ = start(module, AGENTBUS_MODELS_FILE=str(ROOT / "models.example.toml"))
    assert (kind, openai_loaded) == (expected, "True")
