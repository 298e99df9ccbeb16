"""The lag probe on the real embedded broker: opened and closed at once without an error."""

from __future__ import annotations

import pytest
from agentbus.shared.lag import LagProbe
from agentbus.shared.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_probe_stopped_right_after_it_started_stops_cleanly(broker, topic_prefix):
    # The chaos drain does this when every ticket finished before it looked: aiokafka's consumer
    # raised CancelledError out of stop() then.
    probe = LagProbe(Settings(kafka_bootstrap_servers=broker.bootstrap, topic_prefix=topic_prefix))
    await probe.start()
    await probe.stop()
