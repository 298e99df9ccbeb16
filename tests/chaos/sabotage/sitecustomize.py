"""Test-only sabotage for the chaos suite, loaded by the service processes when this directory is on
their PYTHONPATH and AGENTBUS_CHAOS_SABOTAGE names a rule to break: `skip_claim` (the effect ledger
claim always wins, so a redelivered action runs again) or `ack_first` (the offset is committed before
the outputs are published, so a crash in between loses the event). Production never loads it."""

from __future__ import annotations

import os
from typing import Any

MODE = os.environ.get("AGENTBUS_CHAOS_SABOTAGE", "")


def _skip_claim() -> None:
    from agentbus.executor import store

    async def claim(self: Any, key: str, action_id: str, tool: str) -> store.Effect:
        await self.pool.execute(
            """INSERT INTO executor.effects (idempotency_key, action_id, tool, status)
               VALUES ($1, $2, $3, 'started') ON CONFLICT (idempotency_key)
               DO UPDATE SET attempts = executor.effects.attempts + 1, updated_at = now()""",
            key,
            action_id,
            tool,
        )
        return store.Effect(key, "started", None, None, claimed_now=True)

    store.PgEffectLedger.claim = claim  # type: ignore[method-assign]


def _ack_first() -> None:
    from agentbus.shared import bus

    process = bus.Bus._process

    async def ack_then_process(self: Any, msg: Any, handler: Any) -> None:
        await msg.ack()
        await process(self, msg, handler)

    bus.Bus._process = ack_then_process  # type: ignore[method-assign]


if MODE == "skip_claim" and os.environ.get("AGENTBUS_SERVICE", "").startswith("executor"):
    _skip_claim()
elif MODE == "ack_first" and os.environ.get("AGENTBUS_SERVICE"):
    _ack_first()
