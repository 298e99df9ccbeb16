"""`agentbus up --demo` (what `make run` runs) driven from outside: demo outcomes, console, trace,
status and a clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from agentbus.cli import demo
from agentbus.cli.runtime import free_port

pytestmark = pytest.mark.e2e

AGENTBUS = Path(sys.executable).with_name("agentbus")


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENTBUS), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


STEP = re.compile(r"\s*\d+\.\s+\+[\d.]+ms\s+(?:\(\+(?P<latency>[\d.]+)\)\s+)?(?P<type>[a-z]+\.[a-z_]+)\s")


def test_up_with_demo_then_trace_console_status_and_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    port = free_port()
    env["AGENTBUS_CONSOLE_PORT"] = str(port)
    log = tmp_path / "up.log"
    with log.open("w") as out:
        up = subprocess.Popen(
            [str(AGENTBUS), "up", "--demo"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 150
        while "agentbus is up" not in log.read_text() and time.monotonic() < deadline:
            assert up.poll() is None, log.read_text()
            time.sleep(0.5)
        text = log.read_text()
        assert "demo finished: every ticket reached its expected state" in text, text
        # Broker and database were started by `up` itself (nothing in the environment).
        assert "(embedded Tansu)" in text and "embedded Postgres" in text

        rows = dict(re.findall(r"^\s+(T-[A-Z0-9-]+)\s+(.+?)\s{2,}", text, re.MULTILINE))
        by_label = {label.strip(): tid for tid, label in rows.items()}
        assert set(by_label) == {
            "ORD-1001 $20 refund",
            "ORD-1002 $40 refund",
            "ORD-1003 $80 refund",
            "ORD-1004 in transit",
            "non-refund question",
            "U-100 password reset",
            "U-100 grp-prod-admin",
            "malformed event",
        }

        viewer_token = {"Authorization": "Bearer bob-demo-token"}  # the console's demo viewer
        tickets = httpx.get(f"http://127.0.0.1:{port}/api/tickets", headers=viewer_token, timeout=5).json()
        shown = {t["ticket_id"]: t["status"] for t in tickets}
        assert shown[by_label["ORD-1001 $20 refund"]] == "resolved"
        assert shown[by_label["ORD-1002 $40 refund"]] == "awaiting_approval"
        assert shown[by_label["ORD-1003 $80 refund"]] == "escalated"
        assert shown[by_label["malformed event"]] == "dead_lettered"
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "recent tickets" in page.text

        t1001 = by_label["ORD-1001 $20 refund"]
        trace = cli("trace", t1001, env=env, cwd=tmp_path)
        assert trace.returncode == 0, trace.stderr
        lines = trace.stdout.splitlines()
        assert "status: resolved" in lines[0]
        # "  n.  +offset  (+since its cause)  type  producer …"; the first step answers nothing shown.
        steps = [STEP.match(line) for line in lines[1:-1]]
        assert all(steps), lines
        kinds = [m.group("type") for m in steps if m]
        assert steps[0] and steps[0].group("latency") is None
        assert all(m.group("latency") is not None for m in steps[1:] if m)
        assert kinds[:2] == ["ticket.received", "task.classified"]
        assert kinds[-1] == "task.finished"
        # The default run is offline: the deterministic planner and rule-based intake call no model.
        assert lines[-1] == "cost: $0.000000 for 0 model calls, 0 tokens; prompts: none"
        tools = re.findall(r"action\.decided\s+policy\s+\S+ (\w+) rules=(\S+)", trace.stdout)
        assert tools == [
            ("ALLOW", "order.read"),
            ("ALLOW", "refund.autonomous"),
            ("ALLOW", "label.after_refund"),
            ("ALLOW", "reply.own_ticket"),
            ("ALLOW", "reply.own_ticket"),
        ]
        for tool in (
            "orders.get_order",
            "payments.issue_refund",
            "shipping.create_return_label",
            "helpdesk.reply_to_customer",
            "helpdesk.close_ticket",
        ):
            assert re.search(
                rf"action\.executed\s+executor-\S+\s+\S+ {re.escape(tool)} succeeded", trace.stdout
            )

        as_json = orjson.loads(cli("trace", t1001, "--json", env=env, cwd=tmp_path).stdout)
        assert (
            as_json["status"] == "resolved" and len(as_json["events"]) == len(lines) - 2
        )  # header and cost lines

        status = cli("status", env=env, cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert "database  ok" in status.stdout
        for service in (
            "intake",
            "planner",
            "policy",
            "executor-commerce",
            "executor-directory",
            "executor-helpdesk",
            "verifier",
            "escalation",
            "trace-sink",
        ):
            assert re.search(rf"^{service}\s+\d+\s+ready\s+0\s+0$", status.stdout, re.MULTILINE), (
                status.stdout
            )

        # `agentbus approvals` finds the approvals API through runtime.json: the demo's $40 refund
        # waits there for a refund approver.
        assert re.search(r"^approvals http://127\.0\.0\.1:\d+$", text, re.MULTILINE), text
        viewer = {k: v for k, v in env.items() if k != "AGENTBUS_APPROVALS_URL"}
        pending = cli("approvals", "list", env={**viewer, "AGENTBUS_TOKEN": "bob-demo-token"}, cwd=tmp_path)
        assert pending.returncode == 0, pending.stderr
        assert by_label["ORD-1002 $40 refund"] in pending.stdout and "amount_cents=4000" in pending.stdout

        # An upstream system submits a ticket and waits: ORD-1001 was refunded by the demo, so a
        # second request for it is handed to a human.
        ticket = tmp_path / "ticket.json"
        ticket.write_bytes(orjson.dumps(demo.refund_ticket("ORD-1001", ticket_id="T-AGAIN")))
        again = cli("submit", str(ticket), "--wait", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[-1] == "T-AGAIN: escalated"
        summary = cli("trace", "T-AGAIN", env=env, cwd=tmp_path).stdout
        assert "has already been refunded ($20.00)" in summary

        rerun = cli("demo", env=env, cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert rerun.stdout.count(" ok") == 8

        missing = cli("trace", "T-NOPE", env=env, cwd=tmp_path)
        assert missing.returncode == 2 and "no events recorded" in missing.stderr
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
    assert code == 0, log.read_text()
    assert not (tmp_path / ".agentbus" / "runtime.json").exists()
    after = cli("status", env=env, cwd=tmp_path)
    assert after.returncode == 2 and "no running stack" in after.stderr
