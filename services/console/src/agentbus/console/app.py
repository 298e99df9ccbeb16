"""Console composition root: settings → bus, view, access → routes; the lifespan starts the consumer of
every topic, the control listener, the lag probe and the KPI gauges."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.control import ControlListener, SwitchBoard
from agentbus.shared.kafka_clients import client_security_kwargs
from agentbus.shared.lag import LagProbe
from agentbus.shared.settings import Settings
from agentbus.shared.tools import load_registry
from starlette.applications import Starlette

from . import live
from .approvals import ApprovalsClient
from .auth import Access, load_identities
from .config import ConsoleSettings
from .gauges import KpiGauges
from .routes import Console, LagHistory
from .view import TicketView

log = logging.getLogger("agentbus.console")

settings = Settings(service="console")
console_settings = ConsoleSettings()
bus = Bus(settings)
view = TicketView(capacity=console_settings.ticket_capacity)
changes = live.Changes()
# The console's own board: it shows switches and is never halted by one (it must stay watchable).
board = SwitchBoard()
lag = LagHistory(console_settings.lag_history)
approvals = ApprovalsClient(console_settings.approvals_base(settings))
console = Console(
    view=view,
    # Read once at start: a broken tokens file stops the console here, not on every request.
    access=Access(load_identities(console_settings, settings)),
    approvals=approvals,
    board=board,
    publish=bus.publish,
    producer=bus.producer,
    changes=changes,
    lag=lag,
    topic_prefix=settings.topic_prefix,
)


async def on_records(records: list[Any]) -> None:
    for record in records:
        view.add_raw(record.value)
    changes.notify()


# A group per console instance: every console reads the whole history into its own view.
bus.subscribe_batch(topics.ALL_TOPICS, on_records, group=f"console.{settings.instance}")


def lag_services() -> list[str]:
    """Process names as `agentbus up` runs them: one executor per tool group."""
    groups = load_registry(settings.tools_dir).groups()
    names = [s for s in topics.SERVICE_TOPICS if s not in ("console", "executor")]
    return [*names, *(f"executor-{g}" for g in groups)]


async def measure_lag(probe: LagProbe, services: list[str]) -> None:
    while True:
        try:
            lag.record(await probe.measure(services))
        except Exception as exc:  # the broker may be away for a while: show it, keep trying
            lag.error = f"{type(exc).__name__}: {exc}"
            log.warning("consumer lag not measured: %s", lag.error)
        changes.notify()
        await asyncio.sleep(console_settings.lag_interval_s)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    KpiGauges(view.kpis, console_settings.kpi_window_s).register()
    control = ControlListener(settings, board, changes.notify, client_security_kwargs(settings))
    await control.start()
    probe = LagProbe(settings)
    await probe.start()
    await bus.broker.start()
    lag_task = asyncio.create_task(measure_lag(probe, lag_services()), name="consumer-lag")
    bus.mark_ready()
    try:
        yield
    finally:
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task
        await bus.broker.stop()
        await probe.stop()
        await control.stop()
        await approvals.close()


app = Starlette(routes=console.routes(), lifespan=lifespan)
