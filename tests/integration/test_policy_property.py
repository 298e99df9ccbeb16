"""Property: whatever the bundle and whatever is proposed, nothing executes that the bundle does not
allow. Hypothesis generates bundle variants (thresholds, rollout, allowed tools) and proposals
(valid and invalid arguments, other tenants' orders, wrong identities, foreign tickets); each goes
through the real policy decider and the real executor on real Postgres. Every effect the executor
recorded is then checked against an independent statement of the bundle (plain Python, no Cedar)."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from agentbus.cli import demo
from agentbus.executor.handlers import ExecutorHandlers
from agentbus.executor.store import PgEffectLedger
from agentbus.policy.bundles import BundleSet
from agentbus.policy.facts import PgFacts
from agentbus.policy.handlers import PolicyHandlers
from agentbus.policy.store import PgPolicyStore
from agentbus.shared.bus import Bus
from agentbus.shared.capabilities import Signer, Verifier
from agentbus.shared.db import create_pool, migrate
from agentbus.shared.events import ActionDecidedV1, ActionProposedV1, Producer, Proposal
from agentbus.shared.settings import Settings
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from databases import SERVER_URL, drop_database, fresh_database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Handlers only ever see decoded events, and decoding dead-letters strings with NUL (no store can
# keep them; tests/unit/test_events.py), so generated text leaves NUL out.
NO_NUL = st.characters(blacklist_characters="\x00")
TOOLS = [
    "orders.get_order",
    "payments.issue_refund",
    "shipping.create_return_label",
    "helpdesk.reply_to_customer",
    "helpdesk.close_ticket",
]
WRITES = set(TOOLS[1:])
ORDERS = {  # id: (tenant, amount, status)
    "ORD-1001": ("acme", 2000, "delivered"),
    "ORD-1002": ("acme", 4000, "delivered"),
    "ORD-1003": ("acme", 8000, "delivered"),
    "ORD-1004": ("acme", 1500, "in_transit"),
    "ORD-9001": ("globex", 3000, "delivered"),
}
ORDER_ID = re.compile(r"^ORD-[0-9]{3,10}$")
PLANNER = Producer(service="planner", version="property", instance="hypothesis")


@dataclass(frozen=True)
class Variant:
    autonomous: int
    approval: int
    rollout: str
    allowed: tuple[str, ...]


variants = st.builds(
    lambda a, extra, rollout, allowed: Variant(
        a, a + extra, rollout, tuple(t for t in TOOLS if t in allowed)
    ),
    st.integers(0, 6000),
    st.integers(0, 6000),
    st.sampled_from(["shadow", "approval", "limited", "expanded"]),
    st.sets(st.sampled_from(TOOLS), min_size=1),
)

order_ids = st.sampled_from([*ORDERS, "ORD-7777", "ORD-1"])
amounts = st.one_of(st.integers(-5, 9000), st.sampled_from(["100", 1.5, None]))
proposals = st.one_of(
    st.fixed_dictionaries(
        {
            "tool": st.just("payments.issue_refund"),
            "args": st.fixed_dictionaries(
                {"order_id": order_ids, "amount_cents": amounts, "currency": st.sampled_from(["USD", "EUR"])},
                optional={"note": st.text(NO_NUL, max_size=5)},
            ),
            "agent": st.sampled_from(["agent:refunds", "agent:refunds", "agent:it-access"]),
        }
    ),
    st.fixed_dictionaries(
        {
            "tool": st.sampled_from(["orders.get_order", "shipping.create_return_label"]),
            "args": st.fixed_dictionaries({"order_id": order_ids}, optional={"customer_id": st.just("C-1")}),
            "agent": st.just("agent:refunds"),
        }
    ),
    st.fixed_dictionaries(
        {
            "tool": st.sampled_from(["helpdesk.reply_to_customer", "helpdesk.close_ticket"]),
            "args": st.fixed_dictionaries(
                {"ticket_id": st.sampled_from(["OWN", "T-OTHER"])},
                optional={
                    "body": st.text(NO_NUL, min_size=1, max_size=20),
                    "resolution": st.sampled_from(["refunded", "x"]),
                },
            ),
            "agent": st.just("agent:refunds"),
        }
    ),
    st.fixed_dictionaries(
        {
            "tool": st.sampled_from(["payments.wire_transfer", "shell.exec"]),
            "args": st.just({"amount_cents": 100}),
            "agent": st.just("agent:refunds"),
        }
    ),
)


def write_variant(root: Path, variant: Variant) -> Path:
    directory = root / uuid.uuid4().hex[:8]
    shutil.copytree(REPO / "policies" / "refunds", directory / "refunds")
    toml = directory / "refunds" / "bundle.toml"
    text = toml.read_text()
    text = re.sub(r'rollout = "\w+"', f'rollout = "{variant.rollout}"', text, count=1)
    text = re.sub(
        r"^autonomous_max_cents = \d+", f"autonomous_max_cents = {variant.autonomous}", text, flags=re.M
    )
    text = re.sub(r"^approval_max_cents = \d+", f"approval_max_cents = {variant.approval}", text, flags=re.M)
    text = re.sub(
        r"\[thresholds\.expanded\]\nautonomous_max_cents = \d+",
        f"[thresholds.expanded]\nautonomous_max_cents = {variant.approval}",
        text,
    )
    allowed = ", ".join(f'"{t}"' for t in variant.allowed)
    text = re.sub(r"allowed = \[[^\]]*\]", f"allowed = [{allowed}]", text, count=1)
    toml.write_text(text)
    return directory


def permitted(variant: Variant, proposal: Proposal, ticket_id: str, refunded: dict[str, int]) -> bool:
    """What the bundle allows to *execute*, stated independently of the implementation."""
    args, tool = proposal.args, proposal.tool
    if proposal.agent != "agent:refunds" or tool not in variant.allowed or variant.rollout == "shadow":
        return False
    if variant.rollout == "approval" and tool in WRITES:
        return False
    if "order_id" in args and not ORDER_ID.match(str(args["order_id"])):
        return False  # outside the tool's schema
    order = ORDERS.get(args.get("order_id", ""))
    if tool == "orders.get_order":
        return set(args) == {"order_id", "customer_id"} and (order is None or order[0] == "acme")
    if tool == "payments.issue_refund":
        amount = args.get("amount_cents")
        limit = variant.approval if variant.rollout == "expanded" else variant.autonomous
        return (
            set(args) == {"order_id", "amount_cents", "currency"}
            and type(amount) is int
            and amount >= 1
            and order is not None
            and order[0] == "acme"
            and order[2] == "delivered"
            and args["currency"] == "USD"
            # The thresholds count what the order was already refunded (§3.1 to 3.3): no split refunds.
            and refunded.get(args["order_id"], 0) + amount <= limit
            and amount <= order[1] - refunded.get(args["order_id"], 0)
        )
    if tool == "shipping.create_return_label":
        return (
            set(args) == {"order_id"}
            and order is not None
            and order[0] == "acme"
            and refunded.get(args["order_id"], 0) > 0
        )
    if tool == "helpdesk.reply_to_customer":
        return set(args) == {"ticket_id", "body"} and args["ticket_id"] == ticket_id
    if tool == "helpdesk.close_ticket":
        return (
            set(args) == {"ticket_id", "resolution"}
            and args["ticket_id"] == ticket_id
            and args["resolution"] == "refunded"
        )
    return False


@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    pool: asyncpg.Pool
    policy: PolicyHandlers
    executor: ExecutorHandlers
    root: Path


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    loop = asyncio.new_event_loop()
    name, url = loop.run_until_complete(fresh_database(SERVER_URL))
    loop.run_until_complete(migrate(url))
    loop.run_until_complete(demo.seed(url))
    pool = loop.run_until_complete(create_pool(url, max_size=2))
    loop.run_until_complete(
        pool.execute(
            """INSERT INTO sor.customers VALUES ('C-9', 'globex', 'x@globex.test', 'X');
           INSERT INTO sor.orders (id, tenant_id, customer_id, amount_cents, currency, status)
           VALUES ('ORD-9001', 'globex', 'C-9', 3000, 'USD', 'delivered')"""
        )
    )
    key = Ed25519PrivateKey.generate()
    bus = Bus(Settings(service="policy"))
    policy = PolicyHandlers(
        bus, BundleSet(REPO / "policies"), PgPolicyStore(pool), PgFacts(pool), Signer("k", key)
    )
    executor = ExecutorHandlers(Bus(Settings(service="executor")), Verifier({"k": key.public_key()}))
    executor.pool, executor.ledger = pool, PgEffectLedger(pool)
    yield Rig(loop, pool, policy, executor, tmp_path_factory.mktemp("bundles"))
    loop.run_until_complete(pool.close())
    loop.run_until_complete(drop_database(SERVER_URL, name))
    loop.close()


# DELETE, not TRUNCATE: these tables hold a handful of rows and TRUNCATE's locks cost ~100 ms.
RESET = ";".join(
    f"DELETE FROM {table}"
    for table in (
        "sor.refunds",
        "sor.return_labels",
        "sor.ticket_replies",
        "sor.tickets",
        "executor.effects",
        "executor.capability_uses",
        "policy.decisions",
        "policy.task_usage",
        "policy.rate_windows",
        "policy.budget_usage",
        "policy.budget_reservations",
    )
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=variants, steps=st.lists(proposals, min_size=1, max_size=6))
def test_nothing_executes_that_the_bundle_does_not_allow(
    rig: Rig, variant: Variant, steps: list[dict]
) -> None:
    rig.policy.bundles = BundleSet(write_variant(rig.root, variant))
    ticket = f"T-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[list[dict], dict[str, Proposal], list[str]]:
        await rig.pool.execute(RESET)
        sent: dict[str, Proposal] = {}
        verdicts = []
        for n, step in enumerate(steps):
            args = {k: (ticket if v == "OWN" else v) for k, v in step["args"].items()}
            proposal = Proposal(
                action_id=f"act-{ticket}-{n}",
                workflow="refunds",
                agent=step["agent"],
                tool=step["tool"],
                args=args,
                idempotency_key=f"acme:{ticket}:{n}:{step['tool']}",
            )
            sent[proposal.action_id] = proposal
            event = ActionProposedV1(ticket_id=ticket, tenant_id="acme", producer=PLANNER, payload=proposal)
            [decided] = await rig.policy.on_action_proposed(event)
            assert isinstance(decided, ActionDecidedV1)
            verdicts.append(decided.payload.verdict)
            await rig.executor.on_action_decided(decided)
        rows = await rig.pool.fetch("SELECT action_id, status FROM executor.effects ORDER BY created_at")
        return [dict(r) for r in rows], sent, verdicts

    effects, sent, verdicts = rig.loop.run_until_complete(run())
    assert {e["status"] for e in effects} <= {"succeeded"}, effects
    executed = {e["action_id"] for e in effects}
    refunded: dict[str, int] = {}
    # Both directions, in order: nothing the bundle forbids ran, and everything it permits did
    # (budgets, rates and task limits cannot bind at this size), so the test cannot pass vacuously.
    for (action_id, proposal), verdict in zip(sent.items(), verdicts, strict=True):
        expected = permitted(variant, proposal, ticket, refunded)
        assert (action_id in executed) == expected, (variant, proposal, verdict)
        if expected and proposal.tool == "payments.issue_refund":
            order_id = proposal.args["order_id"]
            refunded[order_id] = refunded.get(order_id, 0) + proposal.args["amount_cents"]


def refund_on_its_own_ticket(order: str, cents: int) -> ActionProposedV1:
    """A refund proposal of the refunds workflow, on a new ticket of tenant acme."""
    t = f"T-{uuid.uuid4().hex[:8]}"
    proposal = Proposal(
        action_id=f"act-{t}-1",
        workflow="refunds",
        agent="agent:refunds",
        tool="payments.issue_refund",
        args={"order_id": order, "amount_cents": cents, "currency": "USD"},
        idempotency_key=f"acme:{t}:1:payments.issue_refund",
    )
    return ActionProposedV1(ticket_id=t, tenant_id="acme", producer=PLANNER, payload=proposal)


def test_loop_cap_and_rate_limit_are_typed_denials(rig: Rig) -> None:
    """A planner looping on one ticket hits the task's tool-call cap; a burst hits the rate limit.
    Both are decisions with their rule, which the planner hands to a human."""
    rig.policy.bundles = BundleSet(REPO / "policies")
    ticket = f"T-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[list[list[str]], list[list[str]]]:
        await rig.pool.execute(RESET)
        loop = []
        for n in range(14):  # the refunds bundle allows 12 tool calls per task
            proposal = Proposal(
                action_id=f"act-{ticket}-{n}",
                workflow="refunds",
                agent="agent:refunds",
                tool="orders.get_order",
                args={"order_id": "ORD-1001", "customer_id": "C-1"},
                idempotency_key=f"acme:{ticket}:{n}:orders.get_order",
            )
            event = ActionProposedV1(ticket_id=ticket, tenant_id="acme", producer=PLANNER, payload=proposal)
            [decided] = await rig.policy.on_action_proposed(event)
            loop.append(decided.payload.rule_ids)
        burst = []
        for _ in range(62):  # 60 refunds a minute per tenant; each on its own ticket
            [decided] = await rig.policy.on_action_proposed(refund_on_its_own_ticket("ORD-1003", 1))
            burst.append(decided.payload.rule_ids)
        return loop, burst

    loop, burst = rig.loop.run_until_complete(run())
    assert loop[:12] == [["order.read"]] * 12
    assert loop[12:] == [["limit.tool_calls"]] * 2
    assert burst[:60] == [["refund.autonomous"]] * 60
    assert burst[60:] == [["rate.exceeded"]] * 2


def test_only_an_allow_spends_the_rate_limit(rig: Rig) -> None:
    """A refund waiting for approval runs nothing: 60 of them leave the minute's 60 refunds untouched,
    so the approved ones and the autonomous ones after them are not refused for the rate."""
    rig.policy.bundles = BundleSet(REPO / "policies")

    async def run() -> tuple[list[str], list[list[str]]]:
        await rig.pool.execute(RESET)
        held = [
            (await rig.policy.on_action_proposed(refund_on_its_own_ticket("ORD-1002", 4000)))[0]
            for _ in range(60)
        ]
        after = [
            (await rig.policy.on_action_proposed(refund_on_its_own_ticket("ORD-1003", 1)))[0]
            for _ in range(60)
        ]
        return [d.payload.verdict for d in held], [d.payload.rule_ids for d in after]

    held, after = rig.loop.run_until_complete(run())
    assert held == ["needs_approval"] * 60
    assert after == [["refund.autonomous"]] * 60
