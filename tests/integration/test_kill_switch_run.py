"""Acceptance: a kill switch on the executor's input topic, engaged during a 500-ticket run, stops
executions; after resume every ticket completes, nothing lost or executed twice."""

from __future__ import annotations

import pytest
from agentbus.cli import killbench

pytestmark = pytest.mark.integration


async def test_kill_switch_halts_a_500_ticket_run_and_resume_completes_it(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    env = {"AGENTBUS_RECONCILE_AFTER_S": "900"}
    async with start_stack(broker, server_database_url, topic_prefix, tmp_path, extra_env=env) as stack:
        report = await killbench.run(stack.settings(), tickets=500, kill_at=0.3, hold_s=2.0, timeout=300)
    print("\n".join(report.render()))
    assert report.executions_before_switch >= 150
    assert report.executions_while_held == 0, "executions went on while the switch was engaged"
    assert report.statuses == {"resolved": 500}
    assert report.refunds == 500
    assert report.orders_refunded_twice == 0 and report.orders_never_refunded == 0
    assert report.ok
