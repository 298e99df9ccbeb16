"""The history checker: every record on every topic, the audit store, the effect ledger, the systems of
record and the consumer groups' committed offsets, held against what a correct pipeline guarantees
(DESIGN §3). Each violation names the ticket, key or record."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from agentbus.cli.stack import audit_paths
from agentbus.shared import topics
from agentbus.shared.audit import verify
from agentbus.shared.capabilities import load_verify_keys
from agentbus.shared.db import connect
from agentbus.shared.events import DecodeError, decode
from agentbus.shared.settings import Settings
from agentbus.shared.tools import load_registry
from aiokafka import AIOKafkaConsumer, TopicPartition
from chaos.faults import Malformed

FINAL = ("resolved", "escalated")
# Who must answer a ticket's event of each type (DESIGN §1); an allowed action is the executor of its
# tool's group. A ticket whose last event such a group has committed, with no answer, lost it.
ANSWERED_BY = {
    "ticket.received": "intake",
    "task.classified": "planner",
    "action.proposed": "policy",
    "action.executed": "verifier",
    "action.verified": "planner",
    "escalation.requested": "escalation",
}


@dataclass(frozen=True)
class Rec:
    """One record as read back from the broker."""

    topic: str  # without the prefix
    partition: int
    offset: int
    key: str
    value: bytes
    event: dict[str, Any] | None  # None: it does not decode (a malformed record)


@dataclass
class Recorded:
    records: list[Rec]
    audit_ids: set[str]
    audit_rows: int
    chain_ok: bool
    chain_problem: str
    ledger: list[dict[str, Any]]
    refunds_per_order: dict[str, int]
    committed: dict[str, dict[tuple[str, int], int]]  # group → (topic, partition) → next offset
    prefix: str


@dataclass
class Checked:
    violations: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    outcomes: Counter[str] = field(default_factory=Counter)
    as_expected: int = 0
    needed: int = 0
    duplicates: dict[str, int] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def add(self, check: str, message: str) -> None:
        self.violations[check].append(message)


# Collecting -------------------------------------------------------------------------------------


async def settle(settings: Settings, database_url: str, log: Callable[[str], object]) -> None:
    """Wait until the trace sink has stopped writing (its rows stable for 5 s, at most 120 s)."""
    conn = await connect(database_url)
    try:
        last, since, deadline = -1, time.monotonic(), time.monotonic() + 120
        while time.monotonic() < deadline:
            n = await conn.fetchval("SELECT count(*) FROM audit.events")
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since > 5:
                return
            await asyncio.sleep(0.5)
        log("  the audit store was still growing after 120 s")
    finally:
        await conn.close()


async def read_topics(settings: Settings) -> list[Rec]:
    """Every record of every topic, from the start, until fetches bring nothing more."""
    prefix = settings.topic_prefix
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(topics.topic_name(spec, prefix), p)
            for spec in topics.ALL_TOPICS
            for p in consumer.partitions_for_topic(topics.topic_name(spec, prefix))
            or await _partitions(consumer, topics.topic_name(spec, prefix))
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Rec] = []
        empty = 0
        while empty < 5:  # Tansu understates end offsets after a batch: read until dry instead
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            empty = 0 if batch else empty + 1
            for records in batch.values():
                for r in records:
                    value = r.value or b""
                    try:
                        decode(value)  # what every consumer does first
                        event: dict[str, Any] | None = orjson.loads(value)
                    except DecodeError:
                        event = None
                    out.append(
                        Rec(
                            r.topic.removeprefix(prefix),
                            r.partition,
                            r.offset,
                            r.key.decode(errors="replace") if r.key else "",
                            value,
                            event,
                        )
                    )
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def committed_offsets(
    settings: Settings, groups: dict[str, str]
) -> dict[str, dict[tuple[str, int], int]]:
    """Each consumer group's committed positions, read as its consumers read them on joining (the
    admin client's OffsetFetch version does not decode on Tansu 0.6)."""
    out: dict[str, dict[tuple[str, int], int]] = {}
    for key, group in groups.items():
        topic = settings.topic_prefix + key.split("|")[1]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
            offsets = {}
            for p in sorted(parts):
                committed = await consumer.committed(TopicPartition(topic, p))
                if committed is not None and committed >= 0:
                    offsets[(key.split("|")[1], p)] = committed
            out[group] = offsets
        finally:
            await consumer.stop()
    return out


def stage_groups(prefix: str, processes: Iterable[str]) -> dict[str, str]:
    """(process, topic) → consumer group, keyed 'process|topic'."""
    out = {}
    for proc in processes:
        service = "executor" if proc.startswith("executor-") else proc
        consumed, _ = topics.SERVICE_TOPICS.get(service, ((), ()))
        if service in ("trace-sink", "console"):
            continue  # batch consumers with one group of their own; they answer nothing
        for spec in consumed:
            out[f"{proc}|{spec.name}"] = topics.consumer_group(proc, spec, prefix)
    return out


async def collect(
    settings: Settings, database_url: str, state_dir: Path, published: Iterable[Any]
) -> Recorded:
    records = await read_topics(settings)
    processes = [
        p.name.removesuffix(".log") for p in (state_dir / "logs").glob("*.log") if p.stem != "broker"
    ]
    groups = stage_groups(settings.topic_prefix, processes)
    committed = await committed_offsets(settings, groups)
    conn = await connect(database_url)
    try:
        audit_ids = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM audit.events")}
        checkpoints, _, public = audit_paths(state_dir)
        report = await verify(conn, checkpoints, load_verify_keys(public, None))
        ledger = [dict(r) for r in await conn.fetch("SELECT * FROM executor.effects")]
        refunds = {
            r["order_id"]: r["n"]
            for r in await conn.fetch("SELECT order_id, count(*) AS n FROM sor.refunds GROUP BY order_id")
        }
    finally:
        await conn.close()
    return Recorded(
        records=records,
        audit_ids=audit_ids,
        audit_rows=len(audit_ids),
        chain_ok=report.ok and report.events > 0,
        chain_problem=str(report.first) if report.first else ("empty chain" if not report.events else ""),
        ledger=ledger,
        refunds_per_order=refunds,
        committed={group: committed[group] for group in committed},
        prefix=settings.topic_prefix,
    )


# Checking ---------------------------------------------------------------------------------------


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))


def check(
    recorded: Recorded, published: dict[str, Any], malformed: list[Malformed], *, min_completed: float
) -> Checked:
    out = Checked()
    recs = recorded.records
    by_ticket: dict[str, dict[str, Rec]] = defaultdict(dict)  # ticket → event_id → first record
    copies: dict[str, list[Rec]] = defaultdict(list)
    for r in recs:
        if r.event is None:
            continue
        eid = r.event["event_id"]
        copies[eid].append(r)
        if r.event.get("ticket_id"):
            by_ticket[r.event["ticket_id"]].setdefault(eid, r)
    caused = {r.event["causation_id"] for r in recs if r.event and r.event.get("causation_id")}

    # 1. Acknowledged by the broker ⇒ in the audit store.
    for eid, rs in copies.items():
        if eid not in recorded.audit_ids:
            r = rs[0]
            out.add(
                "lost_from_audit",
                f"{r.event['type']} {eid} of {r.key} ({r.topic}@{r.partition}:{r.offset}) "
                "is on the broker but not in the audit store",
            )  # type: ignore[index]
    for tid, p in published.items():
        if tid not in by_ticket:
            out.add(
                "lost_from_audit",
                f"ticket {tid} was acknowledged at {p.partition}:{p.offset} but is on no topic",
            )

    # 2. The hash chain verifies.
    if not recorded.chain_ok:
        out.add("hash_chain", f"audit chain does not verify: {recorded.chain_problem}")

    # 3. Exactly one final state each; and 4. a committed event with no answer is a lost event.
    dead_by_source = {
        (
            r.event["payload"]["source_topic"],
            r.event["payload"]["partition"],
            r.event["payload"]["offset"],
        ): r.event
        for r in recs
        if r.event and r.event["type"] == "deadletter.recorded"
    }
    registry = load_registry()
    for tid, p in published.items():
        events = by_ticket.get(tid, {})
        finished = {
            eid: r.event["payload"]["outcome"]
            for eid, r in events.items()
            if r.event and r.event["type"] == "task.finished"
        }  # type: ignore[index]
        if len(finished) == 1:
            outcome = next(iter(finished.values()))
            out.outcomes[outcome] += 1
            if outcome == p.expected:
                out.as_expected += 1
            continue
        if len(finished) > 1:
            out.outcomes["finished twice"] += 1
            out.add("final_state", f"{tid} finished {len(finished)} times: {sorted(finished.values())}")
            continue
        out.outcomes["unfinished"] += 1
        leaves = [
            r
            for eid, r in events.items()
            if eid not in caused and r.event and r.event["type"] != "deadletter.recorded"
        ]
        where = []
        for leaf in leaves:
            assert leaf.event is not None
            positions = [(c.topic, c.partition, c.offset) for c in copies[leaf.event["event_id"]]]
            dead = [dead_by_source.get((recorded.prefix + t, pa, o)) for t, pa, o in positions]
            if any(dead):
                reason = next(d for d in dead if d)["payload"]["reason"]
                where.append(f"{leaf.event['type']} dead-lettered ({reason[:80]})")
                continue
            group = _answering_group(leaf.event, registry)
            if group is None:
                where.append(f"last event {leaf.event['type']} ({leaf.topic}@{leaf.partition}:{leaf.offset})")
                continue
            stage = [
                (g, offs)
                for g, offs in recorded.committed.items()
                if f".{group}." in g and g.endswith(leaf.topic)
            ]
            consumed = [g for g, offs in stage if all(offs.get((t, pa), 0) > o for t, pa, o in positions)]
            if consumed:
                out.add(
                    "lost_event",
                    f"{tid}: {leaf.event['type']} {leaf.event['event_id']} "
                    f"({leaf.topic}@{leaf.partition}:{leaf.offset}) "
                    f"was committed by {consumed[0]} but nothing answers it",
                )
                where.append(f"{leaf.event['type']} lost by {group}")
            else:
                where.append(f"{leaf.event['type']} not yet consumed by {group}")
        out.add("final_state", f"{tid} never finished: {'; '.join(where) or 'no events'}")

    # 5. No effect twice for one idempotency key: one fresh successful execution per key (a redelivery
    # is answered from the ledger, marked duplicate); a record repeated byte for byte is the
    # transport's duplicate, not a second execution. And one refund per order in the system of record.
    fresh: dict[str, set[bytes]] = defaultdict(set)
    absorbed_exec = 0
    for r in recs:
        if r.event and r.event["type"] == "action.executed":
            ex = r.event["payload"]
            if ex["duplicate"]:
                absorbed_exec += 1
            elif ex["status"] == "succeeded":
                fresh[ex["idempotency_key"]].add(r.value)
    for key, values in sorted(fresh.items()):
        if len(values) > 1:
            out.add("duplicate_effect", f"{key} executed {len(values)} times (not answered from the ledger)")
    for order, n in sorted(recorded.refunds_per_order.items()):
        if n > 1:
            out.add("duplicate_effect", f"order {order} refunded {n} times")

    # 6. Per-ticket order: each event's cause is known and happened before it; a ticket's records on
    # one topic share one partition; nothing new happens after the ticket finished.
    known = set(copies)
    for tid, events in by_ticket.items():
        parts: dict[str, set[int]] = defaultdict(set)
        end = None
        for r in events.values():
            assert r.event is not None
            parts[r.topic].add(r.partition)
            if r.event["type"] == "task.finished":
                end = _at(r.event)
            cause = r.event.get("causation_id")
            if cause and r.event["type"] != "deadletter.recorded":
                if cause not in known:
                    out.add(
                        "order",
                        f"{tid}: {r.event['type']} {r.event['event_id']} answers {cause}, "
                        "which is on no topic",
                    )
                elif _at(copies[cause][0].event) > _at(r.event):  # type: ignore[arg-type]
                    out.add(
                        "order",
                        f"{tid}: {r.event['type']} {r.event['event_id']} occurred before its cause {cause}",
                    )
        for topic, ps in parts.items():
            if len(ps) > 1:
                out.add("order", f"{tid}: records on {topic} spread over partitions {sorted(ps)}")
        if end is not None:
            for r in events.values():
                assert r.event is not None
                if r.event["type"] not in ("deadletter.recorded", "control.switch") and _at(r.event) > end:
                    out.add(
                        "order", f"{tid}: {r.event['type']} {r.event['event_id']} after the ticket finished"
                    )

    # 7. Every malformed record is in the dead-letter topic, with a reason.
    for m in malformed:
        dead = dead_by_source.get((m.topic, m.partition, m.offset))
        if dead is None:
            out.add(
                "dead_letter",
                f"{m.kind} record {m.key} ({m.topic}@{m.partition}:{m.offset}) is not dead-lettered",
            )
        elif not dead["payload"]["reason"]:
            out.add("dead_letter", f"{m.kind} record {m.key} dead-lettered without a reason")
    for dead in dead_by_source.values():
        out.dead_letters[dead["payload"]["error_type"]] += 1

    # 8. Enough tickets completed as expected that a run where everything failed cannot pass.
    out.needed = max(1, math.ceil(min_completed * len(published)))
    if out.as_expected < out.needed:
        out.add(
            "completed",
            f"only {out.as_expected} of {len(published)} tickets reached their expected final state "
            f"(need {out.needed})",
        )

    decodable = [r for r in recs if r.event is not None]
    out.duplicates = {
        "ledger_repeats": sum(max(0, row["attempts"] - 1) for row in recorded.ledger),
        "executions_answered_from_ledger": absorbed_exec,
        "redelivered_records": len(decodable) - len(copies),
    }
    return out


def _answering_group(event: dict[str, Any], registry: Any) -> str | None:
    """The stage (process name) that must answer this event; None when nothing must."""
    kind = event["type"]
    if kind == "action.decided":
        decision = event["payload"]
        if decision["verdict"] == "allow" and decision.get("rollout") != "shadow":
            spec = registry.get(decision["proposal"]["tool"])
            return f"executor-{spec.group if spec else 'unregistered'}"
        return "planner" if decision["verdict"] == "deny" else "escalation"
    return ANSWERED_BY.get(kind)
