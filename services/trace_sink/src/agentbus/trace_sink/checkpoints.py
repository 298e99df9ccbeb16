"""When the trace sink signs the audit chain's head: right after a batch commits, at most once per interval.

Checkpoints let `verify` catch a deleted tail. The rows after the newest checkpoint are the only part
of the chain that can be cut off without a trace, so that window must stay short. Signing after
every batch would add a line, and an fsync, up to 20 times a second: that is about 350 MB a day
under load. With an interval (1 s by default), a busy sink writes at most one line a second. A head
that is not signed at once is signed when its interval ends, so a sink that goes quiet still has
its last events covered within a second. An idle sink writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from agentbus.shared.audit import ChainHead, append_checkpoint, checkpoint_line
from agentbus.shared.capabilities import Signer, load_signer
from agentbus.shared.settings import Settings

log = logging.getLogger("agentbus.trace_sink")


class Checkpointer:
    def __init__(self, signer: Signer | None, directory: Path | None, interval_s: float) -> None:
        self.signer, self.directory, self.interval_s = signer, directory, interval_s
        self._pending: ChainHead | None = None
        self._last = float("-inf")
        self._timer: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Checkpointer:
        signer = load_signer(settings.audit_signing_key_file, None, None, ttl_s=0)
        if signer is None or settings.audit_checkpoint_dir is None:
            log.warning(
                "audit checkpoints off (set AGENTBUS_AUDIT_SIGNING_KEY_FILE and "
                "AGENTBUS_AUDIT_CHECKPOINT_DIR): `agentbus audit verify` cannot detect a truncated tail"
            )
            return cls(None, None, settings.audit_checkpoint_interval_s)
        return cls(signer, settings.audit_checkpoint_dir, settings.audit_checkpoint_interval_s)

    async def note(self, head: ChainHead) -> None:
        """A committed head: signed now, or when the interval since the last checkpoint ends."""
        if self.signer is None:
            return
        self._pending = head
        wait = self._last + self.interval_s - time.monotonic()
        if wait <= 0:
            await self._write()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._later(wait))

    async def flush(self) -> None:
        """Sign the pending head now (on shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._write()

    async def _later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._timer = None
        await self._write()

    async def _write(self) -> None:
        head, self._pending = self._pending, None
        if head is None or self.signer is None or self.directory is None:
            return
        line = checkpoint_line(self.signer, head, datetime.now(UTC))
        try:
            await asyncio.to_thread(append_checkpoint, self.directory, line)
        except OSError:
            # The rows are committed; a missed checkpoint only widens the window, so keep consuming.
            log.exception("cannot write the audit checkpoint for position %d", head.position)
            if self._pending is None:
                self._pending = head
            return
        self._last = time.monotonic()
