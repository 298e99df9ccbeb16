"""Kafka security settings: incomplete ones are refused naming what to set; the aiokafka kwargs and
FastStream's security object are built from one source and agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentbus.shared.kafka_clients import bootstrap_servers, client_security_kwargs, kafka_security
from agentbus.shared.settings import Settings
from faststream.kafka.security import parse_security
from pydantic import ValidationError
from tls_certs import ThrowawayCA


def settings(**kwargs: object) -> Settings:
    return Settings(service="verifier", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "AGENTBUS_KAFKA_SASL_PASSWORD"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "AGENTBUS_KAFKA_SASL_USERNAME"),
        ({"kafka_ssl_cafile": "/ca.crt"}, "use SSL or SASL_SSL"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/k.key"}, "AGENTBUS_KAFKA_SSL_CERTFILE"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "kafka_sasl_mechanism"),
    ],
)
def test_incomplete_security_settings_are_refused_naming_what_to_set(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**kwargs)


def test_plaintext_adds_nothing() -> None:
    assert client_security_kwargs(settings()) == {}
    assert kafka_security(settings()) is None


def test_sasl_scram_over_tls_is_the_same_for_aiokafka_and_faststream(tmp_path: Path) -> None:
    ca = ThrowawayCA.create(tmp_path)
    s = settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="scram-sha-256",  # any case, as operators type it
        kafka_sasl_username="agentbus-verifier",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=ca.cert_path,
    )
    kwargs = client_security_kwargs(s)
    assert {k: v for k, v in kwargs.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "agentbus-verifier",
        "sasl_plain_password": "s3cret",
    }
    # The broker is verified against the given CA, and only it.
    cas = [dict(x[0] for x in c["subject"]) for c in kwargs["ssl_context"].get_ca_certs()]
    assert cas == [{"commonName": "agentbus test CA"}]
    faststream = parse_security(kafka_security(s))
    assert {k: faststream[k] for k in kwargs if k != "ssl_context"} == {
        k: v for k, v in kwargs.items() if k != "ssl_context"
    }
    assert faststream["ssl_context"] is not None


def test_mtls_loads_the_client_certificate(tmp_path: Path) -> None:
    ca = ThrowawayCA.create(tmp_path)
    cert, key = ca.issue("agentbus-verifier")
    s = settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=ca.cert_path,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
    )
    assert client_security_kwargs(s)["security_protocol"] == "SSL"
    assert parse_security(kafka_security(s))["security_protocol"] == "SSL"
    # A key that does not match the certificate is caught when the client is configured.
    _, other_key = ca.issue("someone-else")
    mismatched = settings(kafka_security_protocol="SSL", kafka_ssl_certfile=cert, kafka_ssl_keyfile=other_key)
    with pytest.raises(Exception, match=r"KEY_VALUES_MISMATCH|key values mismatch"):
        client_security_kwargs(mismatched)


def test_several_bootstrap_servers_are_separate_hosts() -> None:
    s = settings(kafka_bootstrap_servers="k1:9093, k2:9093,")
    assert bootstrap_servers(s) == ["k1:9093", "k2:9093"]
