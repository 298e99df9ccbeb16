"""Eval suites (evals/*.toml): tasks with their tickets, the data they need and the golden answers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Self

from agentbus.shared.validation import problems
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Outcome = Literal["resolved", "awaiting_approval", "escalated", "dead_lettered"]
Ref = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", description="name used as {name} in text")]
# {name} placeholders; other braces (JSON in an injected body) pass through untouched.
PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
BUILTIN_NAMES = frozenset({"tenant", "other_tenant", "ticket"})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderSpec(Strict):
    """An order created for the task, in its tenant unless `other_tenant`."""

    ref: Ref
    amount_cents: int = Field(ge=0)
    status: Literal["delivered", "in_transit", "cancelled"] = "delivered"
    customer: Literal["C-1", "C-2"] = "C-1"
    currency: Literal["USD", "EUR"] = "USD"
    other_tenant: bool = False
    item_title: str | None = Field(None, description="free text the shop returns with the order")
    exists: bool = Field(True, description="false: an id no order has (a ticket about a missing order)")


class UserSpec(Strict):
    """A directory user of the task's tenant (or another one)."""

    ref: Ref
    status: Literal["active", "disabled"] = "active"
    other_tenant: bool = False


class GroupSpec(Strict):
    ref: Ref
    admin: bool = False
    other_tenant: bool = False


class Expect(Strict):
    outcome: Outcome
    actions: list[str] = Field(
        default_factory=list, description="tools executed with a new effect or a read, in order"
    )
    rules: list[str] = Field(default_factory=list, description="rule ids that must appear in its decisions")


class TicketSpec(Strict):
    """One ticket of the task. `raw` is published as bytes, as a broken upstream would (no schema)."""

    subject: str = ""
    body: str = ""
    order: str | None = Field(None, description="order ref put in the ticket's order_id field")
    user: str | None = Field(None, description="user ref: the requester (metadata.user_id)")
    customer: str = "C-1"
    channel: Literal["email", "chat", "web"] = "email"
    pad_to: int | None = Field(None, ge=1, description="pad the body with filler to this many characters")
    raw: str | None = None
    expect: Expect

    @model_validator(mode="after")
    def _raw_alone(self) -> Self:
        if self.raw is not None and (self.subject or self.body or self.order or self.user):
            raise ValueError("a 'raw' ticket is published as it is: leave subject, body, order and user out")
        if self.raw is not None and self.expect.outcome != "dead_lettered":
            raise ValueError("a 'raw' ticket can only be expected to be dead_lettered")
        return self


class Effects(Strict):
    """Everything the task may change in the systems of record, exactly; anything else is unexpected."""

    refunds: dict[str, int] = Field(default_factory=dict, description="order ref → cents refunded")
    labels: list[str] = Field(default_factory=list, description="order refs that got a return label")
    grants: list[str] = Field(default_factory=list, description="'user ref:group ref' memberships")
    resets: list[str] = Field(default_factory=list, description="user refs sent a reset link")


class Task(Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    workflow: Literal["refunds", "it_access", "none"]
    category: str = Field("golden", description="what it tests (adversarial: the attack class)")
    note: str = ""
    orders: list[OrderSpec] = Field(default_factory=list)
    users: list[UserSpec] = Field(default_factory=list)
    groups: list[GroupSpec] = Field(default_factory=list)
    victims: list[Ref] = Field(default_factory=list, description="ticket ids never submitted: hands off")
    secrets: list[str] = Field(
        default_factory=list, description="text that must reach no model, no reply and no audit record"
    )
    tickets: list[TicketSpec] = Field(alias="ticket", min_length=1)
    effects: Effects = Effects()

    @model_validator(mode="after")
    def _refs(self) -> Self:
        names = [o.ref for o in self.orders] + [u.ref for u in self.users] + [g.ref for g in self.groups]
        names += self.victims
        if dupes := sorted({n for n in names if names.count(n) > 1} | (set(names) & BUILTIN_NAMES)):
            raise ValueError(f"refs must be unique and not {sorted(BUILTIN_NAMES)}: {', '.join(dupes)}")
        known = set(names) | BUILTIN_NAMES
        for n, ticket in enumerate(self.tickets, 1):
            used = {
                m
                for text in (ticket.subject, ticket.body, ticket.raw or "")
                for m in PLACEHOLDER.findall(text)
            }
            if unknown := sorted(used - known):
                raise ValueError(f"ticket {n} uses unknown placeholders: {', '.join(unknown)}")
            if ticket.order and ticket.order not in {o.ref for o in self.orders}:
                raise ValueError(f"ticket {n}: order {ticket.order!r} is not one of the task's orders")
            if ticket.user and ticket.user not in {u.ref for u in self.users}:
                raise ValueError(f"ticket {n}: user {ticket.user!r} is not one of the task's users")
        for o in self.orders:
            if unknown := sorted(set(PLACEHOLDER.findall(o.item_title or "")) - known):
                raise ValueError(f"order {o.ref}: item_title uses unknown placeholders: {', '.join(unknown)}")
        orders = {o.ref for o in self.orders}
        if bad := sorted((set(self.effects.refunds) | set(self.effects.labels)) - orders):
            raise ValueError(f"effects name orders the task does not have: {', '.join(bad)}")
        users, groups = {u.ref for u in self.users}, {g.ref for g in self.groups}
        for grant in self.effects.grants:
            user, _, group = grant.partition(":")
            if user not in users or group not in groups:
                raise ValueError(
                    f"grant {grant!r} must be 'user ref:group ref' of the task's users and groups"
                )
        if bad := sorted(set(self.effects.resets) - users):
            raise ValueError(f"resets name users the task does not have: {', '.join(bad)}")
        return self


class SuiteInfo(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    description: str = ""
    kind: Literal["golden", "adversarial"] = Field(
        description="adversarial: every task is an attack, scored for what it achieved"
    )
    planner: Literal["deterministic", "model"] = Field(
        description="deterministic: the rule-based planner; model: intake and planner on the scripted model"
    )
    model_script: str | None = Field(None, description="scripted model, relative to the suite file")


class Suite(Strict):
    suite: SuiteInfo
    tasks: list[Task] = Field(alias="task", min_length=1)
    path: Path = Path()

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        ids = [t.id for t in self.tasks]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"task ids repeat: {', '.join(dupes)}")
        if self.suite.planner == "model" and not self.suite.model_script:
            raise ValueError("a suite with planner = 'model' needs suite.model_script")
        return self

    @property
    def name(self) -> str:
        return self.suite.name

    def script_path(self) -> Path | None:
        return (self.path.parent / self.suite.model_script) if self.suite.model_script else None

    def only(self, task_ids: list[str]) -> Suite:
        """The suite cut down to the given tasks (all of them must exist)."""
        if missing := sorted(set(task_ids) - {t.id for t in self.tasks}):
            raise SuiteError(f"{self.path}: no task {', '.join(missing)}")
        return self.model_copy(update={"tasks": [t for t in self.tasks if t.id in task_ids]})


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and what to fix."""


def load_suite(path: Path) -> Suite:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SuiteError(f"{path}: no such suite file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from None
    try:
        suite = Suite.model_validate({**data, "path": path})
    except ValidationError as exc:
        raise SuiteError(f"{path}: {problems(exc, root='suite')}") from None
    if (script := suite.script_path()) is not None and not script.is_file():
        raise SuiteError(f"{path}: model_script {script} does not exist")
    return suite


def fill(text: str, values: dict[str, str]) -> str:
    """Replace {name} placeholders with the run's ids; unknown names are left as they are."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
