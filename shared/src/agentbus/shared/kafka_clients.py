"""How every Kafka client of a process connects: TLS and SASL from the settings, one source for all."""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from .settings import Settings

SASL_SECURITY: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
    "PLAIN": SASLPlaintext,
    "SCRAM-SHA-256": SASLScram256,
    "SCRAM-SHA-512": SASLScram512,
}


def bootstrap_servers(settings: Settings) -> list[str]:
    """KAFKA_BOOTSTRAP_SERVERS as a list: FastStream wraps a string in a list as it is, and aiokafka
    then reads "k1:9092,k2:9092" as one host called "k1:9092,k2"."""
    return [host.strip() for host in settings.kafka_bootstrap_servers.split(",") if host.strip()]


def client_security_kwargs(settings: Settings) -> dict[str, Any]:
    """aiokafka keyword arguments (producer, consumer, admin) for the configured protocol; empty for
    PLAINTEXT. Settings has already refused an incomplete configuration."""
    proto = settings.kafka_security_protocol
    if proto == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": proto}
    if proto.endswith("SSL"):
        # The broker is checked against the CA file (or the system's roots); a client certificate,
        # when given, is this service's identity (mTLS).
        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            password=settings.kafka_ssl_key_password,
        )
    if proto.startswith("SASL"):
        kwargs.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return kwargs


def kafka_security(settings: Settings) -> BaseSecurity | None:
    """The same configuration as FastStream's security object (its broker takes no raw kwargs)."""
    kwargs = client_security_kwargs(settings)
    if not kwargs:
        return None
    ssl_context = kwargs.get("ssl_context")
    if "sasl_mechanism" not in kwargs:
        return BaseSecurity(ssl_context=ssl_context, use_ssl=True)
    return SASL_SECURITY[kwargs["sasl_mechanism"]](
        username=kwargs["sasl_plain_username"],
        password=kwargs["sasl_plain_password"],
        ssl_context=ssl_context,
        use_ssl=ssl_context is not None,
    )
