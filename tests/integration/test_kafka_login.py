"""Every service process, started as `agentbus up` starts it but against the cluster that
KAFKA_BOOTSTRAP_SERVERS names, logs in as its own identity: its SASL/SCRAM user, or its client
certificate under mTLS; no client of any process connects without it."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest
from agentbus.cli.runtime import free_port
from agentbus.cli.stack import Stack, repo_root
from agentbus.shared.db import migrate
from agentbus.shared.topics import identity_of
from kafka_handshake import HandshakeRecorder
from tls_certs import ThrowawayCA

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def tls_listener(ca: ThrowawayCA) -> ssl.SSLContext:
    """A broker's TLS listener that requires a client certificate from the CA (mTLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca.cert_path))
    context.load_cert_chain(*ca.issue("127.0.0.1", server=True))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.mark.parametrize("auth", ["sasl-scram", "mtls"])
async def test_every_service_process_logs_in_as_itself(
    auth: str, server_database_url: str, tmp_path: Path
) -> None:
    await migrate(server_database_url)
    ca = ThrowawayCA.create(tmp_path / "ca")
    listener = tls_listener(ca) if auth == "mtls" else None
    # Two bootstrap addresses, as a cluster is given: each process must treat them as two hosts.
    recorders = [HandshakeRecorder(ssl_context=listener), HandshakeRecorder(ssl_context=listener)]
    for recorder in recorders:
        await recorder.start()
    if auth == "mtls":
        common = {"AGENTBUS_KAFKA_SECURITY_PROTOCOL": "SSL", "AGENTBUS_KAFKA_SSL_CAFILE": str(ca.cert_path)}
    else:
        common = {
            "AGENTBUS_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "AGENTBUS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "AGENTBUS_KAFKA_SASL_PASSWORD": "from-a-secret",
        }
    stack = Stack(
        state_dir=tmp_path / "state",
        bootstrap=",".join(r.bootstrap for r in recorders),
        database_url=server_database_url,
        console_port=free_port(),
        escalation_port=free_port(),
        extra_env=common,
    )
    names = list(stack.service_commands({"AGENTBUS_TOOLS_DIR": str(repo_root() / "tools")}))
    principals = {name: f"agentbus-{identity_of(name)}" for name in names}
    own: dict[str, dict[str, str]] = {}
    for name, principal in principals.items():
        if auth == "mtls":
            cert, key = ca.issue(principal)
            own[name] = {"AGENTBUS_KAFKA_SSL_CERTFILE": str(cert), "AGENTBUS_KAFKA_SSL_KEYFILE": str(key)}
        else:
            own[name] = {"AGENTBUS_KAFKA_SASL_USERNAME": principal}
    supervisor = stack.supervisor_for(tmp_path / "logs", own)

    def logged_in() -> set[str | None]:
        connections = [c for r in recorders for c in r.connections]
        return {c.peer_cn if auth == "mtls" else c.user for c in connections}

    supervisor.start()
    try:
        deadline = time.monotonic() + 150
        while not set(principals.values()) <= logged_in() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(supervisor.stop)
        for recorder in recorders:
            await recorder.stop()

    connections = [c for r in recorders for c in r.connections if c.client_id]
    assert set(principals.values()) <= logged_in(), f"never seen: {set(principals.values()) - logged_in()}"
    assert all(r.connections for r in recorders), "both bootstrap hosts are used"
    if auth == "mtls":
        assert {c.peer_cn for c in connections} == set(principals.values())
        assert all(c.mechanism is None for c in connections)
    else:
        assert [c for c in connections if c.plaintext_request is not None] == [], "a client skipped SASL"
        assert {c.mechanism for c in connections if c.mechanism} == {"SCRAM-SHA-512"}
        assert {c.user for c in connections if c.user} == set(principals.values())
