"""A TCP proxy with faults (slow, cut) in front of the broker or Postgres, on its own thread and loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from agentbus.cli.runtime import free_port

# (host, port) for TCP, or a path for a unix socket (embedded Postgres listens on one only). A
# callable, because the socket of a restarted Postgres may move.
Target = Callable[[], tuple[str, int] | str]


@dataclass
class FaultyProxy:
    """Forwards 127.0.0.1:`port` to the target. `slow(delay)` holds every chunk for `delay` seconds
    each way; `cut()` resets every open connection and refuses new ones until `heal()`."""

    name: str
    target: Target
    port: int = field(default_factory=free_port)
    delay: float = 0.0
    refusing: bool = False
    connections: int = 0  # accepted so far
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _started: threading.Event = field(default_factory=threading.Event)
    _server: asyncio.Server | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"proxy-{self.name}", daemon=True).start()
        if not self._started.wait(10):
            raise TimeoutError(f"proxy {self.name} did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", self.port, backlog=512)
        )
        self._started.set()
        self._loop.run_forever()

    def stop(self) -> None:
        def close() -> None:
            if self._server is not None:
                self._server.close()
            self._reset_all()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)

    def slow(self, delay: float) -> None:
        self.delay = delay

    def cut(self) -> None:
        """A network partition: what is open is reset, what comes is refused."""
        self.refusing = True
        self._loop.call_soon_threadsafe(self._reset_all)

    def heal(self) -> None:
        self.refusing = False
        self.delay = 0.0

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        target = self.target()
        try:
            if isinstance(target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.refusing:
                    break
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side closed or failed: close the other, as a real network path would.
            writer.transport.abort()
