"""The bare relay `agentbus bench` compares the pipeline with: real hop processes on the real broker
carry every message end to end, each parsed on the way, and a message of fewer hops enters later."""

from __future__ import annotations

from functools import partial

import pytest
from agentbus.cli import pipebench
from agentbus.cli.pipeload import Send, drive
from agentbus.cli.relay import Relay
from agentbus.cli.stack import EMBEDDED_BROKER_ENV
from agentbus.shared.events import TicketReceivedV1, decode
from agentbus.shared.settings import Settings

pytestmark = pytest.mark.integration

HOPS = 3


async def test_relay_carries_each_message_through_its_hops(broker, topic_prefix, tmp_path):
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap, topic_prefix=topic_prefix, topic_partitions=4
    )
    relay = Relay(settings, HOPS, tmp_path, env=EMBEDDED_BROKER_ENV)
    tickets = pipebench.plan("SMOKE1", "M", 10, 0.5, 10**9, 10**9)
    try:
        await relay.start()
        # Refunds make all three hops, IT access tickets the last two.
        hops = {"refunds": 3, "it_access": 2}
        sends = [
            Send(
                t.relay_id,
                partial(pipebench.ticket_message, relay.entry_topic(hops[t.workflow]), t, t.relay_id),
            )
            for t in tickets
        ]
        run = await drive(settings, "smoke", sends, relay.last_topic, timeout=30)
        assert all(p.poll() is None for p in relay.procs), "a hop process died"
    finally:
        relay.stop()
    assert set(run.ended) == {t.relay_id for t in tickets}
    assert all(latency > 0 for latency in run.latencies_s)
    for key, value in run.end_values.items():
        event = decode(value)
        assert isinstance(event, TicketReceivedV1) and event.ticket_id == key
