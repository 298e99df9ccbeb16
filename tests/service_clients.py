"""Run as a script: builds every service as its composition root does (importing its app module, or
the reconciler's Kafka readers) under the Kafka settings in the environment, and prints as JSON the
client configuration each one built and the topics and groups it subscribed. One process for all, so
the services' module-level state never leaks into the test process; AGENTBUS_KAFKA_SASL_USERNAME is
set to agentbus-<service> before each import, as a deployment gives each service its own user."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from typing import Any

import orjson

APP_MODULES = {
    "intake": "agentbus.intake.app",
    "planner": "agentbus.planner.app",
    "policy": "agentbus.policy.app",
    "executor": "agentbus.executor.app",
    "verifier": "agentbus.verifier.app",
    "escalation": "agentbus.escalation.app",
    "trace-sink": "agentbus.trace_sink.app",
    "console": "agentbus.console.app",
}
SECURITY_KEYS = ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password")


def described(kwargs: dict[str, Any]) -> dict[str, Any]:
    ssl_context = kwargs.get("ssl_context")
    return {
        "bootstrap_servers": kwargs.get("bootstrap_servers"),
        **{k: kwargs.get(k) for k in SECURITY_KEYS},
        "ssl": ssl_context is not None,
        "ca_subjects": [dict(x[0] for x in c["subject"]) for c in ssl_context.get_ca_certs()]
        if ssl_context
        else [],
    }


def aiokafka_client(client: Any) -> dict[str, Any]:
    """What an aiokafka consumer, producer or admin client will connect with."""
    inner = client._client
    return described(
        {
            "bootstrap_servers": inner._bootstrap_servers,
            "security_protocol": inner._security_protocol,
            "sasl_mechanism": inner._sasl_mechanism,
            "sasl_plain_username": inner._sasl_plain_username,
            "sasl_plain_password": inner._sasl_plain_password,
            "ssl_context": inner._ssl_context,
        }
    )


def faststream_service(name: str, module: str) -> dict[str, Any]:
    bus = importlib.import_module(module).bus
    broker = bus.broker
    from agentbus.shared.control import ControlListener, SwitchBoard
    from agentbus.shared.kafka_clients import client_security_kwargs

    # What Bus.start_control builds when the service starts.
    control = ControlListener(bus.settings, SwitchBoard(), None, client_security_kwargs(bus.settings))
    return {
        "service": bus.service,
        "producer": described(broker._connection_kwargs),
        "consumers": described(broker.config.configs[0].builder.keywords),
        "control": aiokafka_client(control.consumer),
        "subscriptions": [
            {"topics": list(sub.topic_names), "group": sub.group_id} for sub in broker.subscribers
        ],
        "follows_control": True,
    }


def reconciler() -> dict[str, Any]:
    from agentbus.reconciler.broker import BrokerLog, consumer_groups
    from agentbus.shared.lag import LagProbe
    from agentbus.shared.settings import Settings

    settings = Settings(service="reconciler")
    groups = consumer_groups(settings)
    log, probe = BrokerLog(settings, groups), LagProbe(settings)
    return {
        "service": "reconciler",
        "broker_log": aiokafka_client(log.consumer),
        "broker_log_admin": aiokafka_client(log.admin),
        "lag_probe": aiokafka_client(probe.consumer),
        "reads_by_position": sorted(groups),
        "describes_groups": sorted({g for gs in groups.values() for g in gs}),
        "subscriptions": [],
        "follows_control": False,
    }


async def build_all() -> dict[str, Any]:
    """aiokafka builds its clients only inside a running event loop, as the services do."""
    report = {}
    for name, module in APP_MODULES.items():
        os.environ["AGENTBUS_KAFKA_SASL_USERNAME"] = f"agentbus-{name}"
        report[name] = faststream_service(name, module)
    os.environ["AGENTBUS_KAFKA_SASL_USERNAME"] = "agentbus-reconciler"
    report["reconciler"] = reconciler()
    return report


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(asyncio.run(build_all())).decode())
