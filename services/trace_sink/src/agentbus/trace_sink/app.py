"""Trace sink composition root: every topic → the hash-chained audit store, in batches; signed heads."""

from typing import Any

from agentbus.shared import topics
from agentbus.shared.bus import Bus
from agentbus.shared.db import open_pool
from agentbus.shared.settings import Settings

from . import store
from .checkpoints import Checkpointer
from .sink import to_row

settings = Settings(service="trace-sink")
bus = Bus(settings)
checkpoints = Checkpointer.from_settings(settings)
state: dict[str, Any] = {}


async def write_batch(records: list[Any]) -> None:
    rows = [r for rec in records if (r := to_row(rec.topic, rec.partition, rec.offset, rec.value))]
    if rows and (head := await store.append(state["pool"], rows)):
        await checkpoints.note(head)


# A span per record: the audit write shows in each ticket's trace.
bus.subscribe_batch(topics.ALL_TOPICS, write_batch, group="trace-sink", span_per_record=True)
app = bus.app()


@app.on_startup
async def open_database() -> None:
    state["pool"] = await open_pool(settings)
    await store.seal(state["pool"])


# After the consumers have stopped, so no batch can commit a head newer than the one signed here.
@app.after_shutdown
async def sign_last_head() -> None:
    await checkpoints.flush()
