"""Policy bundles: `policies/<workflow>/bundle.toml` + `rules.cedar`, loaded, validated with file and
line, hashed into a version, and reloaded when either file changes."""

from __future__ import annotations

import hashlib
import logging
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cedarpy
import orjson
from agentbus.shared.tools import ToolRegistry, load_registry
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

log = logging.getLogger("agentbus.policy")

Rollout = Literal["shadow", "approval", "limited", "expanded"]
ROLLOUTS: tuple[str, ...] = ("shadow", "approval", "limited", "expanded")
VERDICTS = ("allow", "needs_approval")

# Rule ids the decider itself produces (not from rules.cedar); each needs a [sections] text.
BUILTIN_RULES = frozenset(
    {
        "agent.mismatch",
        "tool.denied",
        "tool.not_allowed",
        "args.invalid",
        "rules.no_permit",
        "limit.tool_calls",
        "limit.model_calls",
        "limit.tokens",
        "limit.spend",
        "rate.exceeded",
        "budget.exhausted",
        "rollout.shadow",
        "rollout.approval",
        "approval.granted",
        "approval.rejected",
        "approval.unmatched",
    }
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle, located for the person who has to fix it."""

    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class BundleError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class CedarRule:
    policy_id: str  # Cedar's own id (policy0, …)
    rule_id: str  # the @id annotation
    effect: str  # permit | forbid
    verdict: str  # allow | needs_approval | deny
    section: str
    line: int
    text: str = ""  # the rule's Cedar source, for `policy explain`


@dataclass(frozen=True)
class Budget:
    name: str
    tool: str
    amount_arg: str
    per_day: int


@dataclass(frozen=True)
class Bundle:
    workflow: str
    version: str
    path: Path
    agent: str
    roles: tuple[str, ...]
    allowed_tools: frozenset[str]
    denied_tools: frozenset[str]
    writes: frozenset[str]
    schemas: dict[str, dict[str, Any]]
    approver_role: str
    rollout: Rollout
    retention_days: int
    thresholds: dict[str, Any]
    limits: dict[str, int]
    budgets: tuple[Budget, ...]
    rate_limits: dict[str, int]  # tool -> calls per minute per tenant
    sections: dict[str, str]
    cedar: str
    rules: dict[str, CedarRule] = field(default_factory=dict)  # by Cedar policy id
    validators: dict[str, Draft202012Validator] = field(default_factory=dict, compare=False, repr=False)

    def thresholds_for_rollout(self) -> dict[str, Any]:
        """`[thresholds]`, with `[thresholds.expanded]` laid over it in expanded rollout."""
        base = {k: v for k, v in self.thresholds.items() if not isinstance(v, dict)}
        if self.rollout == "expanded":
            base.update(self.thresholds.get("expanded", {}))
        return base


def _line_of(text: str, needle: str) -> int:
    """1-based line of the first line that starts with `needle` (a key or table header), ignoring
    comments; 1 when absent."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(needle):
            return number
    return 1


def _statements(cedar: str) -> list[tuple[int, str]]:
    """Split Cedar source into (first line, text) per policy statement, respecting strings and
    comments, so a parse error can be pinned to the statement that has it."""
    out: list[tuple[int, str]] = []
    start, line, depth, i = 0, 1, 0, 0
    start_line: int | None = None
    in_str = False
    while i < len(cedar):
        ch = cedar[i]
        if in_str:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif cedar.startswith("//", i):
            end = cedar.find("\n", i)
            i = len(cedar) if end < 0 else end
            continue
        elif ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch == ";" and depth == 0:
            out.append((start_line or line, cedar[start : i + 1]))
            start, start_line = i + 1, None
        if ch == "\n":
            line += 1
        elif not ch.isspace() and start_line is None and not in_str and ch != ";":
            start_line = line
        i += 1
    if cedar[start:].strip() and start_line is not None:
        out.append((start_line, cedar[start:]))
    return out


def _parse_cedar(path: Path, cedar: str) -> tuple[dict[str, CedarRule], list[Problem]]:
    problems: list[Problem] = []
    statements = _statements(cedar)
    for line, text in statements:
        if "//" in text.strip() and not text.strip().rstrip(";").strip():
            continue
        try:
            cedarpy.policies_to_json_str(text)
        except ValueError as exc:
            problems.append(Problem(path, line, f"Cedar syntax: {exc}"))
    if problems:
        return {}, problems
    parsed = orjson.loads(cedarpy.policies_to_json_str(cedar))["staticPolicies"]
    rules: dict[str, CedarRule] = {}
    seen: dict[str, int] = {}
    for n, (line, source) in enumerate(statements):
        policy_id = f"policy{n}"
        policy = parsed.get(policy_id)
        if policy is None:
            continue
        notes = policy.get("annotations", {})
        rule_id = notes.get("id")
        if not rule_id:
            problems.append(Problem(path, line, 'every rule needs an @id("…") annotation'))
            continue
        if rule_id in seen:
            problems.append(
                Problem(path, line, f"duplicate rule id {rule_id!r} (first at line {seen[rule_id]})")
            )
        seen[rule_id] = line
        effect = policy["effect"]
        verdict = "deny" if effect == "forbid" else notes.get("verdict", "allow")
        if effect == "permit" and verdict not in VERDICTS:
            problems.append(Problem(path, line, f"@verdict must be one of {VERDICTS}, not {verdict!r}"))
        if "section" not in notes:
            problems.append(Problem(path, line, f'rule {rule_id!r} needs a @section("§…") annotation'))
        rules[policy_id] = CedarRule(
            policy_id, rule_id, effect, verdict, notes.get("section", ""), line, source.strip()
        )
    return rules, problems


def load(directory: Path, registry: ToolRegistry | None = None) -> Bundle:
    """Read and validate one bundle directory against the tool registry; raises BundleError listing
    every problem found."""
    registry = registry or load_registry()
    toml_path, cedar_path = directory / "bundle.toml", directory / "rules.cedar"
    problems: list[Problem] = []
    missing = [p for p in (toml_path, cedar_path) if not p.is_file()]
    if missing:
        raise BundleError([Problem(p, 0, "file missing") for p in missing])
    toml_bytes, cedar_bytes = toml_path.read_bytes(), cedar_path.read_bytes()
    text = toml_bytes.decode(errors="replace")
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else max(1, len(text.splitlines()))  # "end of document"
        raise BundleError([Problem(toml_path, line, f"TOML: {exc}")]) from exc

    def need(table: str, key: str, kind: type | tuple[type, ...]) -> Any:
        value = data.get(table, {}).get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            problems.append(
                Problem(toml_path, _line_of(text, f"[{table}]"), f"[{table}] {key} must be a {names}")
            )
            return None
        return value

    workflow = need("bundle", "workflow", str)
    rollout = need("bundle", "rollout", str)
    if rollout is not None and rollout not in ROLLOUTS:
        problems.append(
            Problem(
                toml_path, _line_of(text, "rollout"), f"rollout must be one of {ROLLOUTS}, not {rollout!r}"
            )
        )
    retention = need("bundle", "retention_days", int)
    agent = need("agent", "id", str)
    roles = need("agent", "roles", list) or []
    allowed = need("tools", "allowed", list) or []
    denied = data.get("tools", {}).get("denied", [])
    approver_role = need("approvals", "approver_role", str)
    sections = data.get("sections", {})
    # Argument schemas come from the tool registry; a bundle may narrow one for its workflow with
    # [tools.schemas."<tool>"] (both must pass).
    schemas: dict[str, dict[str, Any]] = data.get("tools", {}).get("schemas", {})
    validators: dict[str, Draft202012Validator] = {}
    for tool in allowed:
        spec = registry.get(tool)
        if spec is None:
            problems.append(
                Problem(toml_path, _line_of(text, "allowed"), f"tool {tool!r} is not in the tool registry")
            )
            continue
        narrowing = schemas.get(tool)
        if narrowing is not None:
            try:
                Draft202012Validator.check_schema(narrowing)
            except SchemaError as exc:
                where = _line_of(text, f'[tools.schemas."{tool}"]')
                problems.append(Problem(toml_path, where, f"schema for {tool!r} is invalid: {exc.message}"))
                continue
        combined = spec.args_schema if narrowing is None else {"allOf": [spec.args_schema, narrowing]}
        validators[tool] = Draft202012Validator(combined)
    for tool in set(allowed) & set(denied):
        problems.append(Problem(toml_path, _line_of(text, "denied"), f"{tool!r} is both allowed and denied"))

    limits = {k: v for k, v in data.get("limits", {}).items()}
    for key, value in limits.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(
                Problem(toml_path, _line_of(text, f"{key} ="), f"limit {key} must be an integer >= 0")
            )
    budgets = []
    for name, spec in data.get("budgets", {}).items():
        line = _line_of(text, f"[budgets.{name}]")
        try:
            budgets.append(Budget(name, spec["tool"], spec["amount_arg"], int(spec["per_day"])))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(
                Problem(toml_path, line, f"budget {name!r} needs tool, amount_arg, per_day ({exc})")
            )
    rate_limits = {}
    for tool, spec in data.get("rate_limits", {}).items():
        per_minute = spec.get("per_minute") if isinstance(spec, dict) else None
        if not isinstance(per_minute, int) or per_minute <= 0:
            problems.append(
                Problem(
                    toml_path,
                    _line_of(text, f'[rate_limits."{tool}"]'),
                    f"rate limit for {tool!r} needs per_minute > 0",
                )
            )
        else:
            rate_limits[tool] = per_minute

    cedar = cedar_bytes.decode(errors="replace")
    rules, cedar_problems = _parse_cedar(cedar_path, cedar)
    problems.extend(cedar_problems)
    for rule_id in sorted(BUILTIN_RULES - sections.keys()):
        problems.append(
            Problem(toml_path, _line_of(text, "[sections]"), f"[sections] has no text for {rule_id!r}")
        )
    if problems:
        raise BundleError(problems)
    version = (
        "sha256:"
        + hashlib.sha256(b"bundle.toml\0" + toml_bytes + b"\0rules.cedar\0" + cedar_bytes).hexdigest()[:16]
    )
    return Bundle(
        workflow=workflow,
        version=version,
        path=directory,
        agent=agent,
        roles=tuple(roles),
        allowed_tools=frozenset(allowed),
        denied_tools=frozenset(denied),
        writes=frozenset(t for t in allowed if (spec := registry.get(t)) is not None and spec.writes),
        schemas=schemas,
        approver_role=approver_role,
        rollout=rollout,  # type: ignore[arg-type]
        retention_days=retention,
        thresholds=dict(data.get("thresholds", {})),
        limits=limits,
        budgets=tuple(budgets),
        rate_limits=rate_limits,
        sections=dict(sections),
        cedar=cedar,
        rules=rules,
        validators=validators,
    )


class BundleSet:
    """Every bundle under `policies/`, by workflow, reloaded when its files change. A broken edit
    keeps the last good version in force (and is logged); a bundle that never loaded is an error."""

    def __init__(self, root: Path, registry: ToolRegistry | None = None) -> None:
        self.root = root
        self.registry = registry or load_registry()
        self._loaded: dict[Path, tuple[tuple[float, float], Bundle]] = {}

    def directories(self) -> list[Path]:
        return sorted(p.parent for p in self.root.glob("*/bundle.toml"))

    def _stamp(self, directory: Path) -> tuple[float, float]:
        return tuple(  # type: ignore[return-value]
            (directory / name).stat().st_mtime if (directory / name).exists() else 0.0
            for name in ("bundle.toml", "rules.cedar")
        )

    def _current(self, directory: Path) -> Bundle:
        stamp = self._stamp(directory)
        cached = self._loaded.get(directory)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            bundle = load(directory, self.registry)
        except BundleError as exc:
            if cached is None:
                raise
            log.error("%s: %s; keeping version %s", directory, exc, cached[1].version)
            self._loaded[directory] = (stamp, cached[1])
            return cached[1]
        self._loaded[directory] = (stamp, bundle)
        return bundle

    def all(self) -> dict[str, Bundle]:
        bundles = [self._current(d) for d in self.directories()]
        return {b.workflow: b for b in bundles}

    def get(self, workflow: str) -> Bundle | None:
        return self.all().get(workflow)
