"""The bare relay `agentbus bench` measures the pipeline against: one process per hop, each consuming
a batch from its topic, parsing every record as the services do, producing it to the next topic and
committing once the broker acknowledged the batch (DESIGN §8). `python -m agentbus.cli.relay hop`
runs one hop; `Relay` starts a chain of them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from agentbus.shared.bus import acked_producer, ensure_topics, mark_ready
from agentbus.shared.events import DecodeError, decode
from agentbus.shared.kafka_clients import client_security_kwargs
from agentbus.shared.settings import Settings
from agentbus.shared.topics import TopicSpec, topic_name
from aiokafka import AIOKafkaConsumer

app = typer.Typer(help="The bare relay of `agentbus bench`: one hop per process.")


@app.callback()
def main() -> None:
    """A callback keeps `hop` a named subcommand (a Typer app of one command would drop the name)."""


BATCH = 500  # records per poll, as the trace sink's batches


def relay_topic(n: int) -> TopicSpec:
    """The topic in front of hop `n` (hop n reads topic n and writes topic n+1)."""
    return TopicSpec(f"agentbus.bench.relay.{n:02d}", "ticket.received")


def relay_group(prefix: str, n: int) -> str:
    return f"{prefix}agentbus.bench.relay-hop-{n:02d}"


async def run_hop(settings: Settings, source: str, target: str, group: str) -> None:
    """Consume → parse → produce → commit until cancelled; ready (the settings' ready file) once the
    consumer has joined. A record that does not parse is not forwarded (the services dead-letter
    it); its offset is committed all the same."""
    security = client_security_kwargs(settings)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
        max_poll_records=BATCH,
        **security,
    )
    producer = acked_producer(settings)
    await producer.start()
    await consumer.start()
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)  # joins the group; nothing is produced before ready
        mark_ready(settings)
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            if not batch:
                continue
            acks = []
            for records in batch.values():
                for record in records:
                    try:
                        decode(record.value or b"")
                    except DecodeError:
                        continue
                    acks.append(
                        await producer.send(
                            target, record.value, key=record.key, headers=list(record.headers)
                        )
                    )
            await asyncio.gather(*acks)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
    finally:
        await consumer.stop()
        await producer.stop()


@app.command()
def hop(
    source: Annotated[str, typer.Option(help="topic to consume (full name)")],
    target: Annotated[str, typer.Option(help="topic to produce to (full name)")],
    group: Annotated[str, typer.Option(help="consumer group")],
) -> None:
    """One relay hop. Broker, consumer settings and the ready file (AGENTBUS_READY_FILE) come from
    the environment, as a service's do."""
    settings = Settings(service="relay")

    async def main() -> None:
        task = asyncio.create_task(run_hop(settings, source, target, group))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        loop.add_signal_handler(signal.SIGINT, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


@dataclass
class Relay:
    """A chain of `hops` hop processes on topics relay.00 … relay.<hops>, on the stack's broker."""

    settings: Settings  # broker, topic prefix and partition count
    hops: int
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)  # what the stack gives its services
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def topic(self, n: int) -> str:
        return topic_name(relay_topic(n), self.settings.topic_prefix)

    @property
    def last_topic(self) -> str:
        return self.topic(self.hops)

    def entry_topic(self, hops: int) -> str:
        """Where a message that is to make `hops` hops enters the chain (they all leave at the end)."""
        if not 1 <= hops <= self.hops:
            raise ValueError(f"a message makes 1 to {self.hops} hops on this relay, not {hops}")
        return self.topic(self.hops - hops)

    async def start(self, timeout: float = 60.0) -> None:
        """Create the topics, start every hop, and wait until each has joined its group."""
        await ensure_topics(self.settings, [relay_topic(n) for n in range(self.hops + 1)])
        files = self.spawn()
        deadline = time.monotonic() + timeout
        while not all(f.exists() for f in files):
            if dead := [n for n, p in enumerate(self.procs) if p.poll() is not None]:
                raise RuntimeError(f"relay hop(s) {dead} exited; see {self.state_dir / 'logs'}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"relay hops not ready after {timeout:.0f}s; see {self.state_dir / 'logs'}"
                )
            await asyncio.sleep(0.1)

    def spawn(self) -> list[Path]:
        """Start the hop processes, each in its own session; returns their ready files."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        files = []
        for n in range(self.hops):
            ready_file = self.state_dir / "ready" / f"relay-{n:02d}"
            ready_file.unlink(missing_ok=True)
            files.append(ready_file)
            env = {
                **os.environ,
                **self.env,
                "KAFKA_BOOTSTRAP_SERVERS": self.settings.kafka_bootstrap_servers,
                "AGENTBUS_READY_FILE": str(ready_file),
                "PYTHONUNBUFFERED": "1",
            }
            argv = [
                *(sys.executable, "-m", "agentbus.cli.relay", "hop"),
                *("--source", self.topic(n), "--target", self.topic(n + 1)),
                *("--group", relay_group(self.settings.topic_prefix, n)),
            ]
            with open(logs / f"relay-{n:02d}.log", "ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        return files

    @property
    def pids(self) -> dict[str, int]:
        return {f"relay-{n:02d}": p.pid for n, p in enumerate(self.procs)}

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


if __name__ == "__main__":
    app()
