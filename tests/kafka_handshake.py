"""A listener that records how Kafka clients open a connection (TLS peer certificate, SASL mechanism
and user) and then refuses them: what each service process sends when pointed at a secured cluster.

The embedded Tansu broker can require authentication but keeps users only in storage it cannot
have in memory mode, so no real broker here can accept a SASL login; this records the handshake
up to the point where a broker would check the credentials, speaking just the requests involved
(ApiVersions v0, SaslHandshake v0/v1, SaslAuthenticate v0 — Kafka protocol guide)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from dataclasses import dataclass, field

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36


@dataclass
class Connection:
    client_id: str = ""
    peer_cn: str | None = None  # the client certificate's CN, on a TLS listener that asks for one
    mechanism: str | None = None
    user: str | None = None
    password: str | None = None  # PLAIN only: SCRAM never sends it
    plaintext_request: int | None = None  # api key of a request sent without authenticating first


@dataclass
class HandshakeRecorder:
    ssl_context: ssl.SSLContext | None = None
    mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    connections: list[Connection] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection()
        self.connections.append(conn)
        if (cert := writer.get_extra_info("peercert")) is not None:
            subject = dict(item[0] for item in cert.get("subject", ()))
            conn.peer_cn = subject.get("commonName")
        try:
            while True:
                size = struct.unpack(">i", await reader.readexactly(4))[0]
                request = await reader.readexactly(size)
                api_key, _version, correlation = struct.unpack(">hhi", request[:8])
                client_len = struct.unpack(">h", request[8:10])[0]
                conn.client_id = request[10 : 10 + max(client_len, 0)].decode(errors="replace")
                body = request[10 + max(client_len, 0) :]
                if api_key == API_VERSIONS:
                    apis = [(API_VERSIONS, 0, 0), (SASL_HANDSHAKE, 0, 1), (SASL_AUTHENTICATE, 0, 0)]
                    reply = struct.pack(">hi", 0, len(apis)) + b"".join(struct.pack(">hhh", *a) for a in apis)
                elif api_key == SASL_HANDSHAKE:
                    conn.mechanism = body[2 : 2 + struct.unpack(">h", body[:2])[0]].decode()
                    reply = struct.pack(">hi", 0, len(self.mechanisms)) + b"".join(
                        struct.pack(">h", len(m)) + m.encode() for m in self.mechanisms
                    )
                elif api_key == SASL_AUTHENTICATE:
                    self._read_credentials(conn, body[4 : 4 + struct.unpack(">i", body[:4])[0]])
                    return  # where a broker would check them: refuse, the client will retry
                else:
                    conn.plaintext_request = api_key
                    return
                framed = struct.pack(">i", correlation) + reply
                writer.write(struct.pack(">i", len(framed)) + framed)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    def _read_credentials(conn: Connection, auth: bytes) -> None:
        if conn.mechanism == "PLAIN":  # authzid NUL user NUL password
            _, user, password = auth.split(b"\0", 2)
            conn.user, conn.password = user.decode(), password.decode()
            return
        # SCRAM client-first message: "n,,n=<user>,r=<nonce>" (RFC 5802)
        attributes = dict(part.split("=", 1) for part in auth.decode().split(",")[2:] if "=" in part)
        conn.user = attributes.get("n")
