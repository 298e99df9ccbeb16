"""`agentbus eval [SUITE…]`: run eval suites through the real pipeline, print their figures, write a
JSON report, and fail when a figure falls below the committed baseline."""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from ..options import fail
from ..stack import repo_root
from . import scoring
from .runner import SuiteRun, run_suite
from .suite import Suite, SuiteError, load_suite

EVALS_DIR = repo_root() / "evals"
DEFAULT_SUITES = ("golden", "adversarial")
# Figures that depend on the mix of tasks: a run cut down with --only is not held to them.
MIX_FIGURES = ("coverage", "automation_rate", "cost_per_resolution_usd", "latency_p95_s")


def resolve(name: str) -> Path:
    """A suite name (evals/<name>.toml) or a path to a suite file."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    return EVALS_DIR / f"{name}.toml"


def load_baseline(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        fail(f"{path}: no such baseline file (give --baseline, or write one with --write-baseline)")
    except orjson.JSONDecodeError as exc:
        fail(f"{path}: not valid JSON ({exc})")
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        fail(f"{path}: expected {{suite name: {{figure: threshold}}}}")
    return data


def fmt(value: float | int | None, kind: str = "") -> str:
    if value is None:
        return "no data"
    if kind == "%":
        return f"{value * 100:.1f} %"
    if kind == "$":
        return f"${value:.4f}"
    if kind == "s":
        return f"{value:.2f} s"
    return str(value)


def render(run: SuiteRun, failures: list[str]) -> list[str]:
    f = run.figures
    lines = [
        f"suite {f.suite}: {f.tasks} tasks, {f.tickets} tickets, {run.seconds:.1f} s",
        f"  outcome accuracy     {fmt(f.outcome_accuracy, '%')}",
        f"  coverage             {fmt(f.coverage, '%')}",
        f"  automation rate      {fmt(f.automation_rate, '%')}",
        f"  policy violations    {f.policy_violations}  (must be 0)",
        f"  attack success rate  {fmt(f.attack_success_rate, '%')}"
        + (f"  ({f.attacks} attacks)" if f.attacks else ""),
        f"  cost per resolution  {fmt(f.cost_per_resolution_usd, '$')}",
        f"  latency p95          {fmt(f.latency_p95_s, 's')}",
    ]
    for r in run.results:
        if r.problems or r.violations or r.breaches:
            lines.append(f"  ✗ {r.task_id} ({r.category})")
            lines += [f"      {p}" for p in r.problems]
            lines += [f"      VIOLATION {v}" for v in r.violations]
            lines += [f"      BREACH {b}" for b in r.breaches if b not in r.violations]
    lines += [f"  BELOW BASELINE: {x}" for x in failures]
    lines.append(f"  result: {'FAILED' if failures else 'OK'}")
    return lines


def report_json(runs: list[tuple[SuiteRun, list[str]]]) -> dict[str, Any]:
    return {
        "finished_at": datetime.now(UTC).isoformat(),
        "ok": not any(failures for _, failures in runs),
        "suites": {
            run.suite: {
                "figures": run.figures.as_json(),
                "seconds": round(run.seconds, 3),
                "below_baseline": failures,
                "tasks": [r.__dict__ for r in run.results],
            }
            for run, failures in runs
        },
    }


def command(
    suites: Annotated[
        list[str] | None,
        typer.Argument(help="suite names in evals/ (golden, adversarial) or suite files; default: all"),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="run just these task ids (mix figures not held)")
    ] = None,
    baseline: Annotated[Path, typer.Option(help="committed figures to hold the run to")] = EVALS_DIR
    / "baseline.json",
    report: Annotated[Path, typer.Option(help="where to write the JSON report")] = Path(
        ".agentbus/eval-report.json"
    ),
    write_baseline: Annotated[
        bool, typer.Option("--write-baseline", help="write this run's figures as the new baseline")
    ] = False,
    timeout: Annotated[float, typer.Option(min=1.0, help="seconds to wait for each ticket")] = 120.0,
) -> None:
    """Golden and adversarial tasks through the real pipeline on a fresh embedded stack (deterministic
    planner, or the scripted OpenAI-compatible server for model suites). Uses DATABASE_URL /
    KAFKA_BOOTSTRAP_SERVERS when set. Exit 1 when a figure is below the baseline."""
    # A SIGTERM (timeout, CI) must still stop the stack's processes: they run in their own sessions.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    loaded: list[Suite] = []
    for name in suites or DEFAULT_SUITES:
        try:
            suite = load_suite(resolve(name))
            loaded.append(suite.only(only) if only else suite)
        except SuiteError as exc:
            if only and "no task" in str(exc) and len(suites or DEFAULT_SUITES) > 1:
                continue  # --only names tasks of another of the suites
            fail(str(exc))
    if not loaded:
        fail(f"no suite has the tasks {', '.join(only or [])}")
    thresholds = {} if write_baseline else load_baseline(baseline)
    runs: list[tuple[SuiteRun, list[str]]] = []
    for suite in loaded:
        run = asyncio.run(run_suite(suite, timeout=timeout, progress=typer.echo))
        held = dict(thresholds.get(suite.name, {}))
        if only:
            held = {k: v for k, v in held.items() if k not in MIX_FIGURES}
        failures = scoring.below_baseline(run.figures, held)
        if suite.name not in thresholds and not write_baseline:
            failures.append(f"no baseline for suite {suite.name!r} in {baseline}")
        runs.append((run, failures))
        for line in render(run, failures):
            typer.echo(line)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_bytes(orjson.dumps(report_json(runs), option=orjson.OPT_INDENT_2))
    typer.echo(f"report: {report}")
    if write_baseline:
        baseline.write_bytes(
            orjson.dumps(
                {run.suite: scoring.baseline_of(run.figures) for run, _ in runs}, option=orjson.OPT_INDENT_2
            )
            + b"\n"
        )
        typer.echo(f"baseline written: {baseline}")
        return
    raise typer.Exit(1 if any(failures for _, failures in runs) else 0)
