"""A kill switch on the executor's input topic, engaged during a run, stops executions; after resume
every ticket completes, nothing lost or executed twice. `agentbus bench kill-switch` runs the same
scenario with 500 tickets and prints the figures; here a shorter run keeps the suite fast."""

from __future__ import annotations

import pytest
from agentbus.cli import killbench

pytestmark = pytest.mark.integration

TICKETS = 60


async def test_kill_switch_halts_a_run_and_resume_completes_it(
    start_stack, broker, server_database_url, topic_prefix, tmp_path
):
    async with start_stack(broker, server_database_url, topic_prefix, tmp_path) as stack:
        report = await killbench.run(stack.settings(), tickets=TICKETS, kill_at=0.3, hold_s=2.0, timeout=240)
    print("\n".join(report.render()))
    assert report.executions_before_switch >= 0.3 * TICKETS
    assert report.executions_while_held == 0, "executions went on while the switch was engaged"
    # Work was left when the switch was released, so the hold really held something back.
    assert report.executions > report.executions_before_switch + report.executions_after_switch
    assert report.statuses == {"resolved": TICKETS}
    assert report.refunds == TICKETS
    assert report.orders_refunded_twice == 0 and report.orders_never_refunded == 0
    assert report.ok
