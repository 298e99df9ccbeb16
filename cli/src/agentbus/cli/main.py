"""`agentbus` command line: up, submit, trace, demo, status, schemas."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from agentbus.shared import timeline
from agentbus.shared.events import schemas as event_schemas
from agentbus.shared.lag import consumer_lag
from agentbus.shared.settings import Settings
from agentbus.shared.status import ticket_status

from . import (
    acl_plan,
    approvals,
    audit,
    bench,
    client,
    counterfactual,
    demo,
    model_server,
    policy,
    redrive,
    replay,
    switches,
    tools,
)
from .evals.command import command as evals_command
from .options import DEFAULT_STATE, StateDir, connection, fail
from .runtime import RuntimeInfo
from .stack import Stack, repo_root

app = typer.Typer(help="agentbus: governed AI agents for operations work, on Kafka.", no_args_is_help=True)
app.add_typer(approvals.app, name="approvals")
app.add_typer(audit.app, name="audit")
app.add_typer(bench.app, name="bench")
app.add_typer(replay.app, name="replay")
# Importing these registers their commands on replay.app.
REPLAY_MODULES = (counterfactual, redrive)
app.add_typer(policy.app, name="policy")
app.add_typer(tools.app, name="tools")
app.command("eval")(evals_command)
app.command("acl-plan")(acl_plan.command)
app.command("model-server")(model_server.command)
app.command("export")(audit.export_cmd)
app.command("kill")(switches.kill)
app.command("resume")(switches.resume)
app.command("switches")(switches.list_switches)


@app.command()
def up(
    state_dir: StateDir = DEFAULT_STATE,
    run_demo: Annotated[bool, typer.Option("--demo", help="submit the demo set once up")] = False,
    console_port: Annotated[int, typer.Option(envvar="AGENTBUS_CONSOLE_PORT")] = 8080,
    scale: Annotated[
        list[str] | None, typer.Option(help="processes for a service, e.g. --scale executor=2")
    ] = None,
    model_script: Annotated[
        Path | None,
        typer.Option(help="plan with models: serve this scripted model (see `agentbus model-server`)"),
    ] = None,
) -> None:
    """Start broker (unless KAFKA_BOOTSTRAP_SERVERS), Postgres (unless DATABASE_URL) and every
    service as a supervised process; Ctrl-C stops everything. With AGENTBUS_MODELS_FILE set (or
    --model-script), planner and intake use models; otherwise everything runs offline."""
    replicas = parse_scale(scale or [])
    state = state_dir.resolve()
    extra_env: dict[str, str] = {}
    server = None
    if model_script is not None:
        server, models_file = start_model_server(model_script, state)
        extra_env["AGENTBUS_MODELS_FILE"] = str(models_file)
        typer.echo(f"models   scripted, {server.base_url} ({model_script})")
    stack = Stack.from_env(state, console_port=console_port, replicas=replicas, extra_env=extra_env)
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        typer.echo("starting agentbus…")
        asyncio.run(stack.start())
        assert stack.supervisor and stack.bootstrap and stack.database_url
        info = RuntimeInfo(
            bootstrap=stack.bootstrap,
            database_url=stack.database_url,
            console_url=stack.console_url,
            approvals_url=stack.approvals_url,
            topic_prefix=stack.topic_prefix,
            supervisor_pid=os.getpid(),
            services=stack.supervisor.describe(),
        )
        info.save(stack.state_dir / "runtime.json")
        broker = "embedded Tansu" if stack.broker else "external"
        database = "embedded Postgres" if stack.postgres else "DATABASE_URL"
        typer.echo(f"broker   {stack.bootstrap} ({broker})")
        typer.echo(f"database {database}")
        typer.echo(f"logs     {stack.state_dir / 'logs'}")
        typer.secho(f"console  {stack.console_url}", bold=True)
        typer.echo(
            "         sign in with a token from policies/identities.toml (demo: bob-demo-token viewer, "
            "alice-demo-token approver, carol-demo-token operator)"
        )
        typer.echo(f"approvals {stack.approvals_url}")
        if run_demo:
            ok = asyncio.run(run_demo_set(stack.settings(), timeout=90))
            typer.echo("demo " + ("finished: every ticket reached its expected state" if ok else "FAILED"))
        typer.echo("agentbus is up; Ctrl-C stops it")
        while not stopping.wait(2.0):
            info.services = stack.supervisor.describe()  # pids change when a service restarts
            info.save(stack.state_dir / "runtime.json")
    finally:
        typer.echo("stopping agentbus…")
        stack.stop()
        if server is not None:
            server.stop()
        (stack.state_dir / "runtime.json").unlink(missing_ok=True)


def start_model_server(script: Path, state_dir: Path) -> tuple[model_server.ScriptedModelServer, Path]:
    """The scripted model server on a free port, and a models file (models.example.toml's routes and
    prices) pointing at it."""
    try:
        server = model_server.ScriptedModelServer(script).start()
    except (model_server.ScriptError, OSError) as exc:
        fail(f"--model-script {script}: {exc}")
    example = (repo_root() / "models.example.toml").read_text()
    models_file = state_dir / "models.toml"
    state_dir.mkdir(parents=True, exist_ok=True)
    models_file.write_text(example.replace("http://127.0.0.1:8765/v1", server.base_url))
    return server, models_file


def parse_scale(items: list[str]) -> dict[str, int]:
    """`service=N` pairs, checked against the services there are."""
    from .runtime import SERVICES

    replicas: dict[str, int] = {}
    for item in items:
        name, _, count = item.partition("=")
        known = name in SERVICES or name.startswith("executor-")
        if not known or not count.isdigit() or int(count) < 1:
            fail(f"--scale {item!r}: expected SERVICE=N with N >= 1 and SERVICE one of {', '.join(SERVICES)}")
        replicas[name] = int(count)
    return replicas


async def run_demo_set(settings: Settings, timeout: float = 60.0) -> bool:
    assert settings.database_url
    await demo.seed(settings.database_url, reset=True)
    items = demo.demo_set()
    events: list[Any] = []  # ticket events, and the malformed one as raw (key, bytes)
    ids: list[str] = []
    for _label, body, _ in items:
        if isinstance(body, bytes):
            tid = f"T-BAD-{os.urandom(3).hex().upper()}"
            events.append((tid, body))
        else:
            event = client.ticket_event(body)
            tid = body["ticket_id"]
            events.append(event)
        ids.append(tid)
    await client.publish(settings, events)
    statuses = await client.wait_for(settings.database_url, ids, timeout=timeout)
    all_ok = True
    for (label, _, expected), tid in zip(items, ids, strict=True):
        status = statuses.get(tid, "unknown")
        ok = status == expected
        all_ok &= ok
        mark = typer.style("ok", fg=typer.colors.GREEN) if ok else typer.style("UNEXPECTED", fg="red")
        typer.echo(f"  {tid:<12} {label:<22} {status:<18} {mark}")
    return all_ok


@app.command("demo")
def demo_cmd(
    state_dir: StateDir = DEFAULT_STATE,
    timeout: Annotated[float, typer.Option(help="seconds to wait for outcomes")] = 60.0,
) -> None:
    """Submit the demo set (four orders, a question, a malformed event) and print each outcome."""
    ok = asyncio.run(run_demo_set(connection(state_dir), timeout=timeout))
    raise typer.Exit(0 if ok else 1)


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="JSON ticket: ticket_id, tenant_id, channel, customer…")],
    wait: Annotated[bool, typer.Option("--wait", help="return once resolved, escalated or waiting")] = False,
    timeout: float = 60.0,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Publish a ticket as an upstream system would."""
    try:
        data = orjson.loads(file.read_bytes())
    except FileNotFoundError:
        fail(f"{file}: no such file")
    except OSError as exc:
        fail(f"{file}: cannot read it ({exc.strerror or exc})")
    except orjson.JSONDecodeError as exc:
        fail(f"{file}: not valid JSON ({exc})")
    if not isinstance(data, dict):
        fail(f"{file}: a ticket must be a JSON object")
    try:
        event = client.ticket_event(data)
    except client.BadTicket as exc:
        fail(f"{file}: {exc}")
    settings = connection(state_dir)
    asyncio.run(client.publish(settings, [event]))
    typer.echo(f"submitted {event.ticket_id} (event {event.event_id})")
    if wait:
        assert settings.database_url and event.ticket_id
        statuses = asyncio.run(client.wait_for(settings.database_url, [event.ticket_id], timeout))
        status = statuses[event.ticket_id]
        typer.echo(f"{event.ticket_id}: {status}")
        raise typer.Exit(0 if status in ("resolved", "escalated", "awaiting_approval") else 1)


@app.command()
def trace(
    ticket_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="the raw event chain as JSON")] = False,
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """A ticket's full chain of events from the audit store, in order."""
    from agentbus.shared.db import connect
    from agentbus.trace_sink.store import ticket_events

    settings = connection(state_dir)

    async def load() -> list[dict[str, Any]]:
        assert settings.database_url
        conn = await connect(settings.database_url)
        try:
            return await ticket_events(conn, ticket_id)
        finally:
            await conn.close()

    events = asyncio.run(load())
    if not events:
        fail(f"no events recorded for ticket {ticket_id!r} (check the id with the console)")
    status = ticket_status(events)
    if as_json:
        chain = [{k: v for k, v in e.items() if not k.startswith("_")} for e in events]
        sys.stdout.buffer.write(
            orjson.dumps(
                {
                    "ticket_id": ticket_id,
                    "status": status,
                    "cost": timeline.cost_summary(chain),
                    "step_latency_ms": timeline.step_latency_ms(chain),
                    "events": chain,
                },
                option=orjson.OPT_INDENT_2,
            )
            + b"\n"
        )
    else:
        typer.echo(timeline.render(ticket_id, events, status))


@app.command()
def status(state_dir: StateDir = DEFAULT_STATE) -> None:
    """Services (pid, ready, restarts), consumer lag per service, broker and database."""
    from agentbus.shared.db import connect

    settings = connection(state_dir)
    info = RuntimeInfo.load(state_dir / "runtime.json")

    async def gather() -> tuple[dict[str, int | None] | str, str]:
        try:
            names = [s["service"] for s in info.services] if info else None
            lag: dict[str, int | None] | str = await consumer_lag(settings, names)
        except Exception as exc:  # report, do not crash: status is for when things are wrong
            lag = f"unreachable ({type(exc).__name__}: {exc})"
        try:
            assert settings.database_url
            conn = await connect(settings.database_url)
            version = await conn.fetchval("SHOW server_version")
            await conn.close()
            db = f"ok (PostgreSQL {version})"
        except Exception as exc:
            db = f"unreachable ({type(exc).__name__}: {exc})"
        return lag, db

    lag, db = asyncio.run(gather())
    typer.echo(f"broker    {settings.kafka_bootstrap_servers}: {'ok' if isinstance(lag, dict) else lag}")
    typer.echo(f"database  {db}")
    alive = {s["service"]: s for s in info.services} if info else {}
    typer.echo(f"{'service':<12} {'pid':>7}  {'state':<8} {'restarts':>8}  {'lag':>6}")
    for service in (*alive, *(k for k in (lag if isinstance(lag, dict) else {}) if k not in alive)):
        proc = alive.get(service, {})
        state = "ready" if proc.get("ready") else ("starting" if proc.get("alive") else "down")
        n = lag.get(service) if isinstance(lag, dict) else None
        typer.echo(
            f"{service:<12} {proc.get('pid', '-')!s:>7}  {state if proc else '-':<8} "
            f"{proc.get('restarts', '-')!s:>8}  {'-' if n is None else n:>6}"
        )


@app.command()
def forget(
    subject: Annotated[str, typer.Argument(help="the data subject: the customer id tickets carry")],
    tenant: Annotated[str, typer.Option(help="tenant the subject belongs to")],
    state_dir: StateDir = DEFAULT_STATE,
) -> None:
    """Erase a data subject's personal data (crypto-shredding): their vault key and encrypted
    originals are deleted, so every token of theirs in events and the audit chain stays opaque
    forever. The audit chain itself is untouched and still verifies."""
    from agentbus.shared.db import connect
    from agentbus.shared.pii import forget_subject

    settings = connection(state_dir)

    async def shred() -> int:
        assert settings.database_url
        conn = await connect(settings.database_url)
        try:
            return await forget_subject(conn, tenant, subject)
        finally:
            await conn.close()

    removed = asyncio.run(shred())
    typer.echo(f"forgot subject {subject} of tenant {tenant}: key shredded, {removed} values deleted")


@app.command()
def schemas(
    write: Annotated[bool, typer.Option("--write", help="regenerate the files")] = False,
    root: Path = Path("schemas"),
) -> None:
    """Check (default) or regenerate schemas/ from the event models."""
    root = root if root.is_absolute() else repo_root() / root
    if write:
        for rel in event_schemas.write(root):
            typer.echo(f"wrote {rel}")
        return
    problems = event_schemas.drift(root)
    for p in problems:
        typer.echo(p)
    raise typer.Exit(1 if problems else 0)


if __name__ == "__main__":
    app()
