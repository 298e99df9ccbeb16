"""Kafka wiring every service uses: at-least-once consumers, acknowledged publishing, dead letters.

Delivery rule (DESIGN §3): a consumed offset is committed only after every output event was
acknowledged by the broker (acks=all) and the handler's own Postgres work committed. A message
that cannot be decoded goes to the dead-letter topic at once; one whose handler keeps failing goes
there after `handler_max_attempts`. In both cases the consumer moves on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream import AckPolicy, BaseMiddleware, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import __version__
from .control import ControlListener, SwitchBoard, describe, switch_key
from .events import (
    ControlSwitchV1,
    DeadLetter,
    DeadLetterRecordedV1,
    DecodeError,
    Event,
    Producer,
    Switch,
    decode,
)
from .kafka_clients import bootstrap_servers, client_security_kwargs, kafka_security
from .lost_log import LostLogGuard
from .metrics import BusMetrics, setup_metrics
from .serialization import dumps
from .settings import Settings
from .telemetry import continued, current_traceparent, setup_tracing, ticket_root
from .topics import (
    CLIENT_TOPICS,
    SERVICE_TOPICS,
    TOPIC_FOR_TYPE,
    TopicSpec,
    consumer_group,
    fixed_partition,
    identity_of,
    topic_name,
)
from .transient import is_transient, outage_backoff

log = logging.getLogger("agentbus.bus")

Handler = Callable[[Event], Awaitable[Sequence[Event]]]

# Headers a re-drive (replay from the audit store) puts on republished records: the replay run's id,
# and the one service meant to reprocess them. Other consumers of the topic skip such a record, so a
# re-drive into one stage does not make every stage on that topic act again.
REDRIVE_HEADER = "agentbus-redrive"
REDRIVE_FOR_HEADER = "agentbus-redrive-for"


def header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode(errors="replace")
    return None


BatchHandler = Callable[[list[ConsumerRecord[Any, Any]]], Awaitable[None]]

_PROPAGATOR = TraceContextTextMapPropagator()


class TicketRootMiddleware(BaseMiddleware):
    """A record that comes without trace context (a ticket from upstream, an old re-driven event)
    starts its ticket's trace: the root span the telemetry middleware then opens gets the trace id
    derived from the record key, the ticket id (telemetry.ticket_trace_id). Listed before the
    telemetry middleware, so it wraps it."""

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        record = msg.raw_message
        if isinstance(record, ConsumerRecord) and record.key and header(record, "traceparent") is None:
            with ticket_root(bytes(record.key).decode(errors="replace")):
                return await call_next(msg)
        return await call_next(msg)


class TopicNotGranted(RuntimeError):
    """A service used a topic outside its part of the topic map (and so of its ACLs)."""


class _Broker(KafkaBroker):
    """A KafkaBroker that starts its subscribers together. Each consumer's start waits until its
    group has assigned it partitions (a JoinGroup round: 1 s or more on the embedded Tansu, a
    session timeout while a killed predecessor is still a member); FastStream starts them one after
    another, so a stage with three subscriptions took three rounds to start or restart."""

    async def start(self) -> None:
        await self.connect()
        await asyncio.gather(*(subscriber.start() for subscriber in self.subscribers))
        for publisher in self.publishers:
            await publisher.start()
        self.running = True


class Bus:
    """One service's connection to the bus: a FastStream broker plus agentbus conventions."""

    def __init__(self, settings: Settings, *, tracer_provider: Any = None) -> None:
        from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware

        self.settings = settings
        self.service = settings.service
        clear_ready(settings)
        self.producer = Producer(service=settings.service, version=__version__, instance=settings.instance)
        provider = tracer_provider or setup_tracing(settings)
        self.tracer = trace.get_tracer("agentbus.bus", tracer_provider=provider)
        meter_provider = setup_metrics(settings)
        self.metrics = BusMetrics(settings.service)
        self.broker = _Broker(
            bootstrap_servers(settings),
            client_id=f"agentbus-{settings.service}",
            acks="all",
            enable_idempotence=settings.kafka_idempotence,
            security=kafka_security(settings),
            middlewares=[
                TicketRootMiddleware,
                KafkaTelemetryMiddleware(tracer_provider=provider, meter_provider=meter_provider),
            ],
            # Topics are created by `agentbus up` / deployment, never by a typo in a consumer.
            allow_auto_create_topics=False,
            # How soon a changed partition count is seen (consumers rebalance onto it), and how often
            # consumers check for a lost log (lost_log.py).
            metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
            logger=logging.getLogger(f"agentbus.{settings.service}"),
        )
        # What this service may consume and produce: the topic map its ACLs are generated from
        # (acls.py). A use outside it fails here, in tests and at start-up, not as a denial on a
        # secured cluster. A name outside the map (a test's bus, the relay) is not checked.
        identity = identity_of(settings.service)
        self.grants = (SERVICE_TOPICS.get(identity) or CLIENT_TOPICS.get(identity)) if identity else None
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._outage_waits: dict[tuple[str, int, int], int] = {}
        # Kill switches: the state from the control topic, each stage subscriber (by topic name
        # without prefix) so a switch can pause it, and where each held partition must resume.
        self.switches = SwitchBoard()
        self._control: ControlListener | None = None
        self._subscribers: list[tuple[str, Any]] = []
        self._held: dict[TopicPartition, int] = {}

    def app(self, **kwargs: Any) -> FastStream:
        app = FastStream(self.broker, **kwargs)
        # on_startup runs before the broker's consumers start: the switches are known first.
        app.on_startup(self.start_control)
        app.after_startup(self.mark_ready)
        app.after_shutdown(self.stop_control)
        return app

    async def start_control(self) -> None:
        """Load the kill-switch state from the control topic and keep following it."""
        self._control = ControlListener(
            self.settings, self.switches, self._switch_changed, client_security_kwargs(self.settings)
        )
        await self._control.start()

    async def stop_control(self) -> None:
        if self._control is not None:
            await self._control.stop()
            self._control = None

    def _switch_changed(self, switch: Switch) -> None:
        """Pause every partition of a topic a switch halts at once, and resume the rest."""
        for topic, subscriber in self._subscribers:
            consumer = subscriber.consumer
            if consumer is None:
                continue
            if self.switches.halting(topic) is not None:
                consumer.pause(*consumer.assignment())
                continue
            paused = consumer.paused()
            for tp in paused:
                self._held.pop(tp, None)
            if paused:
                consumer.resume(*paused)
                log.warning("resumed %s after %s", topic, switch_key(switch))

    def _hold(self, consumer: Any, record: ConsumerRecord[Any, Any]) -> None:
        """Keep a record a switch stopped: pause its partition and rewind to it, uncommitted."""
        tp = TopicPartition(record.topic, record.partition)
        consumer.pause(tp)
        held = self._held.get(tp)
        if held is None or record.offset < held:
            self._held[tp] = record.offset
            consumer.seek(tp, record.offset)

    def mark_ready(self) -> None:
        mark_ready(self.settings)

    def topic(self, spec: TopicSpec) -> str:
        return topic_name(spec, self.settings.topic_prefix)

    def _check_grant(self, spec: TopicSpec, consume: bool) -> None:
        if self.grants is None or spec in self.grants[0 if consume else 1]:
            return
        verb = "consumes" if consume else "produces"
        raise TopicNotGranted(
            f"{self.service} {verb} {spec.name}, which the topic map (agentbus.shared.topics."
            f"SERVICE_TOPICS) and so its Kafka ACLs do not grant it: add it there, or do not use it"
        )

    def group(self, spec: TopicSpec) -> str:
        # One consumer group per (service, topic): stages scale and stop independently, and a
        # service that reads several topics never rebalances them against each other.
        return consumer_group(self.service, spec, self.settings.topic_prefix)

    async def publish(self, event: Event) -> None:
        """Publish and wait for the broker's acknowledgement (acks=all).

        The telemetry middleware puts the trace context in the record's headers: the handler's span
        when called from one, else (an HTTP request, a timer) the trace the event's envelope names.
        An envelope without context gets the current one, for the hops headers do not reach: a
        decision taken over HTTP later, a re-drive from the audit store. One with context is never
        changed: a redelivered handler republishes its stored outputs exactly as they were."""
        spec = TOPIC_FOR_TYPE[event.type]
        self._check_grant(spec, consume=False)
        key = message_key(event)
        with continued(event.traceparent, event.ticket_id):
            if event.traceparent is None and (traceparent := current_traceparent()):
                event = event.model_copy(update={"traceparent": traceparent})
            await self.broker.publish(
                dumps(event),
                self.topic(spec),
                key=key.encode() if key else None,
                partition=fixed_partition(spec),
                headers={"type": event.type, "version": str(event.version)},
            )

    def _consumer_options(self) -> dict[str, Any]:
        return {
            "ack_policy": AckPolicy.MANUAL,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": self.settings.fetch_max_wait_ms,
            "session_timeout_ms": self.settings.consumer_session_timeout_ms,
            "heartbeat_interval_ms": self.settings.consumer_heartbeat_interval_ms,
        }

    def subscribe(self, spec: TopicSpec, handler: Handler, **options: Any) -> None:
        """Consume `spec` one event at a time: decode → handler → publish outputs → commit."""
        self._check_grant(spec, consume=True)
        guard = LostLogGuard(self.settings.kafka_metadata_max_age_ms / 1000)
        subscriber = self.broker.subscriber(
            self.topic(spec),
            group_id=self.group(spec),
            listener=guard,
            **{**self._consumer_options(), **options},
        )
        guard.consumer_of = lambda: subscriber.consumer
        self._subscribers.append((spec.name, subscriber))

        @subscriber
        async def consume(msg: KafkaMessage) -> None:
            await self._process(msg, handler)

    def subscribe_batch(
        self,
        specs: Sequence[TopicSpec],
        handler: BatchHandler,
        *,
        group: str,
        max_records: int = 500,
        span_per_record: bool = False,
    ) -> None:
        """Consume several topics in batches of raw records; commit after the handler returns.

        A failing batch is retried (seek back) with capped backoff and never dead-lettered: this is
        for sinks such as the audit store, which must not drop anything. With `span_per_record`,
        each record gets a span in its own ticket's trace (the batch's span, from the telemetry
        middleware, belongs to no ticket).
        """
        for spec in specs:
            self._check_grant(spec, consume=True)
        guard = LostLogGuard(self.settings.kafka_metadata_max_age_ms / 1000)
        subscriber = self.broker.subscriber(
            *(self.topic(s) for s in specs),
            group_id=f"{self.settings.topic_prefix}agentbus.{group}",
            batch=True,
            max_records=max_records,
            batch_timeout_ms=50,
            listener=guard,
            **self._consumer_options(),
        )
        guard.consumer_of = lambda: subscriber.consumer
        failures = 0

        @subscriber
        async def consume_batch(msg: KafkaMessage) -> None:
            nonlocal failures
            records = list(msg.raw_message)  # type: ignore[arg-type]
            started = time.perf_counter()
            spans = [s for r in records if (s := self._record_span(r))] if span_per_record else []
            try:
                await handler(records)
            except Exception as exc:
                failures += 1
                log.exception("batch of %d failed (try %d); retrying", len(records), failures)
                for span in spans:
                    span.record_exception(exc)
                    span.set_status(trace.StatusCode.ERROR, "batch failed; retried")
                    span.end()
                self.metrics.handled("*", "batch", "retry", time.perf_counter() - started)
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))
                await msg.nack()
                return
            failures = 0
            await msg.ack()
            for span in spans:
                span.end()
            self.metrics.handled("*", "batch", "ok", time.perf_counter() - started)
            prefix = self.settings.topic_prefix
            for r in records:
                self.metrics.processed.add(
                    1,
                    {
                        "service": self.service,
                        "topic": r.topic.removeprefix(prefix),
                        "event_type": header(r, "type") or "unknown",
                        "outcome": "ok",
                    },
                )

    def _record_span(self, record: ConsumerRecord[Any, Any]) -> trace.Span | None:
        """A span for one record of a batch, a child of the span that published it. A record
        without context (a ticket as upstream sent it) gets none: the stage that acts on it starts
        the ticket's trace, and a second root here would split it."""
        carrier = {k: bytes(v).decode(errors="replace") for k, v in record.headers or ()}
        parent = _PROPAGATOR.extract(carrier, otel_context.Context())
        if not trace.get_current_span(parent).get_span_context().is_valid:
            return None
        key = bytes(record.key).decode(errors="replace") if record.key else ""
        return self.tracer.start_span(
            f"{record.topic} record",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.kafka.destination.partition": record.partition,
                "messaging.kafka.message.offset": record.offset,
                "messaging.kafka.message.key": key,
            },
        )

    async def _process(self, msg: Any, handler: Handler) -> None:
        record: ConsumerRecord[Any, Any] = msg.raw_message
        key = (record.topic, record.partition, record.offset)
        started = time.perf_counter()
        topic = record.topic.removeprefix(self.settings.topic_prefix)
        event_type = header(record, "type") or "unknown"

        def settled(outcome: str) -> None:
            self.metrics.handled(topic, event_type, outcome, time.perf_counter() - started)

        target = header(record, REDRIVE_FOR_HEADER)
        # A re-drive for `executor` is for every executor-<group> process.
        if target is not None and target != self.service and not self.service.startswith(f"{target}-"):
            await msg.ack()  # a re-drive aimed at another stage
            return
        switch = self.switches.halting(record.topic.removeprefix(self.settings.topic_prefix))
        if switch is not None:
            log.info("holding %s@%s:%s: %s", *key, describe(switch))
            self._hold(msg.consumer, record)
            return
        try:
            try:
                event = decode(msg.body)
            except DecodeError as exc:
                await self.dead_letter(record, exc.kind, str(exc))
                await msg.ack()
                settled("dead_lettered")
                return
            event_type = event.type
            annotate(trace.get_current_span(), event)
            try:
                outputs = await handler(event)
                for output in outputs:
                    await self.publish(output)
            except Exception as exc:
                if is_transient(exc):
                    # Postgres or the broker is away, not the message bad: wait for them, however
                    # long, at a capped pace, without using up the message's attempts.
                    waits = self._outage_waits[key] = self._outage_waits.get(key, 0) + 1
                    log.warning("%s@%s:%s waits for an outage (try %d): %r", *key, waits, exc)
                    await asyncio.sleep(outage_backoff(waits, self.settings.handler_backoff_ms / 1000))
                    await msg.nack()
                    settled("retry")
                    return
                attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
                if attempts < self.settings.handler_max_attempts:
                    log.warning("%s@%s:%s failed (attempt %d): %r", *key, attempts, exc)
                    await asyncio.sleep(self.settings.handler_backoff_ms / 1000 * 2 ** (attempts - 1))
                    await msg.nack()
                    settled("retry")
                    return
                log.error("%s@%s:%s failed %d times, dead-lettering: %r", *key, attempts, exc)
                await self.dead_letter(
                    record, "handler_failed", f"{type(exc).__name__}: {exc}", attempts=attempts
                )
                outcome = "dead_lettered"
            else:
                outcome = "ok"
            self._attempts.pop(key, None)
            self._outage_waits.pop(key, None)
            await msg.ack()
            settled(outcome)
        except Exception:
            # Could not even dead-letter (broker gone?): rewind so the message is not lost.
            log.exception("could not settle %s@%s:%s; will be redelivered", *key)
            await asyncio.sleep(self.settings.handler_backoff_ms / 1000)
            await msg.nack()

    async def dead_letter(
        self, record: ConsumerRecord[Any, Any], kind: str, reason: str, *, attempts: int = 1
    ) -> None:
        key = record.key.decode(errors="replace") if record.key else None
        headers = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
        event = DeadLetterRecordedV1(
            ticket_id=key,
            producer=self.producer,
            payload=DeadLetter(
                source_topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                key=key,
                headers=headers,
                original_b64=base64.b64encode(record.value or b"").decode(),
                reason=reason,
                error_type=kind,  # type: ignore[arg-type]
                consumer=f"{self.service}",
                attempts=attempts,
            ),
        )
        log.warning("dead-lettered %s@%s:%s: %s", record.topic, record.partition, record.offset, reason)
        await self.publish(event)
        self.metrics.dead_letter(record.topic.removeprefix(self.settings.topic_prefix), kind)


def annotate(span: trace.Span, event: Event) -> None:
    """The ticket and event on the span that handles it (find a ticket's trace by attribute)."""
    span.set_attributes(
        {
            k: v
            for k, v in {
                "agentbus.ticket_id": event.ticket_id,
                "agentbus.tenant_id": event.tenant_id,
                "agentbus.event_id": event.event_id,
                "agentbus.event_type": event.type,
                "agentbus.step": event.step,
            }.items()
            if v is not None
        }
    )


def clear_ready(settings: Settings) -> None:
    """Remove a ready file a previous run of this process left: a container restarted in the same
    pod keeps its volumes, and must not look ready before its consumers have joined again."""
    if settings.ready_file is not None:
        settings.ready_file.unlink(missing_ok=True)


def mark_ready(settings: Settings) -> None:
    """Touch the ready file the supervisor waits for (consumers joined, or the loop running)."""
    if settings.ready_file is not None:
        settings.ready_file.parent.mkdir(parents=True, exist_ok=True)
        settings.ready_file.touch()


def message_key(event: Event) -> str | None:
    """Ticket id (per-ticket order), or the switch for control events (one compacted slot each)."""
    if isinstance(event, ControlSwitchV1):
        return switch_key(event.payload)
    return event.ticket_id


async def ensure_topics(settings: Settings, specs: Sequence[TopicSpec] | None = None) -> list[str]:
    """Create any missing agentbus topics; returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from .topics import ALL_TOPICS

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, **client_security_kwargs(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = []
        for spec in specs or ALL_TOPICS:
            name = topic_name(spec, settings.topic_prefix)
            if name in existing:
                continue
            configs = {"cleanup.policy": "compact"} if spec.compacted else {}
            partitions = 1 if spec.compacted else settings.topic_partitions
            copies = settings.topic_replication_factor
            wanted.append(NewTopic(name, partitions, copies, topic_configs=configs))
        if wanted:
            await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()


def acked_producer(settings: Settings, **kwargs: Any) -> AIOKafkaProducer:
    """A plain producer (CLI, re-drive, benchmarks) that waits for every in-sync replica's ack."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        **client_security_kwargs(settings),
        **kwargs,
    )
