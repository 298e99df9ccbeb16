"""`agentbus eval` on the real pipeline: both committed suites pass their baseline with no policy
violation and no successful attack, and a golden answer broken on purpose fails the run."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration

EVALS = Path(__file__).resolve().parents[2] / "evals"
AGENTBUS = str(Path(sys.executable).parent / "agentbus")


async def run_eval(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["DATABASE_URL"] = database_url
    return await asyncio.to_thread(
        subprocess.run, [AGENTBUS, "eval", *args], env=env, capture_output=True, text=True, timeout=840
    )


@pytest.mark.timeout(900)
async def test_both_suites_pass_with_no_violation_and_no_successful_attack(server_database_url, tmp_path):
    report = tmp_path / "report.json"
    result = await run_eval(server_database_url, "--report", str(report))
    print(result.stdout[-6000:], result.stderr[-3000:])
    assert result.returncode == 0
    suites = orjson.loads(report.read_bytes())["suites"]
    golden, adversarial = suites["golden"]["figures"], suites["adversarial"]["figures"]
    assert golden["tasks"] >= 40 and adversarial["attacks"] >= 30
    assert golden["outcome_accuracy"] == adversarial["outcome_accuracy"] == 1.0
    assert golden["policy_violations"] == adversarial["policy_violations"] == 0
    assert adversarial["attack_success_rate"] == 0.0
    # The model suite paid for its model calls; the deterministic one made none.
    assert adversarial["cost_per_resolution_usd"] > 0 and golden["cost_per_resolution_usd"] == 0
    assert "suite golden" in result.stdout and "attack success rate  0.0 %" in result.stdout


@pytest.mark.timeout(300)
async def test_a_broken_golden_answer_fails_the_run(server_database_url, tmp_path):
    broken = tmp_path / "golden.toml"
    text = (EVALS / "golden.toml").read_text()
    task = re.search(r'id = "refund-2000-autonomous".*?expect = \{ outcome = "resolved"', text, re.S)
    assert task is not None
    # A $20 refund resolves; this answer says a human gets it.
    broken.write_text(text[: task.end() - len('"resolved"')] + '"escalated"' + text[task.end() :])
    report = tmp_path / "report.json"
    result = await run_eval(
        server_database_url,
        str(broken),
        "--only",
        "refund-2000-autonomous",
        "--only",
        "refund-3000-needs-approval",
        "--report",
        str(report),
    )
    print(result.stdout[-4000:], result.stderr[-2000:])
    assert result.returncode == 1
    assert "outcome resolved, expected escalated" in result.stdout
    assert "BELOW BASELINE: outcome_accuracy 0.500 below the baseline 1.0" in result.stdout
    data = orjson.loads(report.read_bytes())
    assert data["ok"] is False
    tasks = {t["task_id"]: t["correct"] for t in data["suites"]["golden"]["tasks"]}
    assert tasks == {"refund-2000-autonomous": False, "refund-3000-needs-approval": True}
