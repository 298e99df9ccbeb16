"""A local payment API for tests: refunds keyed by `Idempotency-Key` in its own store (a repeat
returns the stored answer and creates nothing), with switchable faults (5xx, slow answers)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from agentbus.cli.runtime import free_port, wait_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TOKEN = "test-payments-token"


@dataclass
class PaymentApi:
    port: int = field(default_factory=free_port)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)  # by refund id
    by_key: dict[str, str] = field(default_factory=dict)  # idempotency key -> refund id
    effects: Counter[str] = field(default_factory=Counter)  # key -> refunds created (must stay 1)
    attempts: Counter[str] = field(default_factory=Counter)  # key -> requests seen
    fail_with: int | None = None  # answer this status instead of working
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def create(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "unauthorised"}, status_code=401)
        key = request.headers.get("idempotency-key")
        if not key:
            return JSONResponse({"error": "Idempotency-Key required"}, status_code=400)
        self.attempts[key] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with:
            return JSONResponse({"error": "unavailable"}, status_code=self.fail_with)
        body = await request.json()
        with self.lock:
            if key not in self.by_key:
                refund_id = f"pay_{uuid.uuid4().hex[:12]}"
                self.refunds[refund_id] = {
                    "refund_id": refund_id,
                    "order_id": body["order_id"],
                    "amount_cents": body["amount_cents"],
                    "card_number": "4111 1111 1111 1111",  # must never reach a topic
                    "customer_email": "dana@example.com",
                }
                self.by_key[key] = refund_id
                self.effects[key] += 1
            return JSONResponse(self.refunds[self.by_key[key]], status_code=201)

    async def read(self, request: Request) -> Response:
        refund = self.refunds.get(request.path_params["refund_id"])
        return JSONResponse(refund) if refund else JSONResponse({"error": "not found"}, status_code=404)

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/refunds", self.create, methods=["POST"]),
                Route("/refunds/{refund_id}", self.read, methods=["GET"]),
            ]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_port("127.0.0.1", self.port)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def declaration(
    api: PaymentApi,
    name: str = "payments_api.refund",
    group: str = "payments-api",
    timeout_s: float = 2.0,
    attempts: int = 3,
) -> str:
    """The tool declared once, as a deployment would in $AGENTBUS_TOOLS_DIR/payments_api.toml."""
    return f"""
[tools."{name}"]
description = "Refund through the external payment API."
group = "{group}"
writes = true
timeout_s = {timeout_s}
retry = {{ max_attempts = {attempts}, initial_backoff_s = 0.05, max_backoff_s = 0.2 }}
http = {{ method = "POST", url = "{api.url}/refunds", auth_env = "PAYMENTS_API_TOKEN" }}
verify = {{ url = "{api.url}/refunds/{{result_refund_id}}", expect = {{ amount_cents = "{{args_amount_cents}}", order_id = "{{args_order_id}}" }} }}
args = {{ type = "object", additionalProperties = false, required = ["order_id", "amount_cents"], properties = {{ order_id = {{ type = "string", pattern = "^ORD-[0-9]{{3,10}}$" }}, amount_cents = {{ type = "integer", minimum = 1 }} }} }}
result = {{ type = "object", required = ["refund_id"], properties = {{ refund_id = {{ type = "string" }} }} }}
"""


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
