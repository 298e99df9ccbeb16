"""What `agentbus bench` reads about the processes it runs: peak RSS (VmHWM) and CPU time per
process group (a service, the broker, Postgres with its backends), the machine's busy time, and
each service's handler time from its Prometheus endpoint."""

from __future__ import annotations

import contextlib
import random
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MiB; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = parse_vmhwm_kb(status)
    return kb / 1024 if kb is not None else None


def parse_vmhwm_kb(status: str) -> int | None:
    """VmHWM from the text of /proc/<pid>/status (in kB, as the kernel writes it)."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


@dataclass(frozen=True)
class Group:
    """Processes counted together: one service process, or a root and its descendants (Postgres)."""

    name: str
    pid: int
    with_children: bool = False

    def pids(self) -> list[int]:
        try:
            root = psutil.Process(self.pid)
            children = root.children(recursive=True) if self.with_children else []
        except psutil.Error:
            return []
        return [self.pid, *(c.pid for c in children)]


def cpu_times(groups: list[Group]) -> dict[str, dict[int, float]]:
    """CPU seconds (user + system) each process of each group has used so far."""
    sample: dict[str, dict[int, float]] = {}
    for group in groups:
        sample[group.name] = {}
        for pid in group.pids():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(pid).cpu_times()
                sample[group.name][pid] = t.user + t.system
    return sample


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds per group between two samples; a process born in between counts in full."""
    return {
        name: sum(t - before.get(name, {}).get(pid, 0.0) for pid, t in pids.items())
        for name, pids in after.items()
    }


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, over all cores."""
    t = psutil.cpu_times()._asdict()
    # Linux counts guest time inside user time already.
    total = sum(v for k, v in t.items() if k not in ("guest", "guest_nice"))
    idle = t["idle"] + t.get("iowait", 0.0)
    return total - idle, total


HANDLER_METRIC = "agentbus_handler_duration_seconds"


def handler_totals(exposition: str) -> dict[str, tuple[float, float]]:
    """Per consumed topic: (seconds, events) the stage's handlers took so far, from a Prometheus
    scrape of one service (agentbus.handler.duration: the handler and its publishes)."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != HANDLER_METRIC:
            continue
        for s in family.samples:
            topic = s.labels.get("topic", "")
            if s.name == f"{HANDLER_METRIC}_sum":
                sums[topic] = sums.get(topic, 0.0) + s.value
            elif s.name == f"{HANDLER_METRIC}_count":
                counts[topic] = counts.get(topic, 0.0) + s.value
    return {t: (sums.get(t, 0.0), counts.get(t, 0.0)) for t in sums.keys() | counts.keys()}


async def scrape_handlers(ports: dict[str, int]) -> dict[tuple[str, str], tuple[float, float]]:
    """handler_totals of every service with a metrics port, keyed (service, topic); a service that
    does not answer is left out."""
    out: dict[tuple[str, str], tuple[float, float]] = {}
    async with httpx.AsyncClient(timeout=5.0) as http:
        for service, port in ports.items():
            try:
                response = await http.get(f"http://127.0.0.1:{port}/metrics")
            except httpx.HTTPError:
                continue
            for topic, totals in handler_totals(response.text).items():
                out[(service, topic)] = totals
    return out


def free_port_block(size: int, tries: int = 50) -> int:
    """The first of `size` consecutive free local ports (the stack numbers its metrics ports up
    from one base)."""
    for _ in range(tries):
        base = random.randrange(20_000, 60_000)
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError(f"no block of {size} free ports found")
