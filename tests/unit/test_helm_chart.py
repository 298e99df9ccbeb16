"""The Helm chart, rendered offline with Helm's own engine (helm-python-sdk) under several value sets:
every manifest validates against the Kubernetes schemas (strict) or, for KEDA's CRDs, against their
vendored openAPIV3Schema, and the rendered objects say what the deployment promises (an identity,
a budget and a policy per service, each key in one service, credentials only from Secrets)."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from agentbus.planner.model.retrieval import PolicyLibrary
from agentbus.shared.acls import DEFAULT_PRINCIPAL, acl_plan, granted
from agentbus.shared.llm.config import load_models
from agentbus.shared.tools import load_registry
from agentbus.shared.topics import SERVICE_TOPICS, consumer_group, topic_name
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "agentbus"
SCHEMAS = Path(__file__).parent / "schemas"
# The oldest Kubernetes the chart supports (every API it uses is GA there); the complete value set is
# also checked against the newest schemas kubernetes-validate ships (an API removed since).
OLDEST_KUBERNETES, NEWEST_KUBERNETES = "1.30.0", kubernetes_validate.latest_version()
RELEASE, NAMESPACE = "agentbus", "ops"
# Every service of the topic map (the executor's per tool group below).
PROGRAMS = tuple(SERVICE_TOPICS)
EXECUTOR_GROUPS = sorted(load_registry().groups())
SERVICES = sorted([p for p in PROGRAMS if p != "executor"] + [f"executor-{g}" for g in EXECUTOR_GROUPS])
# Stages that consume with a consumer group; the console (a group per replica) and the reconciler
# (consumes nothing) are never autoscaled.
SCALABLE = sorted(s for s in SERVICES if s not in ("console", "reconciler"))

REFUNDS = ROOT / "policies" / "refunds"
SASL = {
    "kafka": {
        "bootstrapServers": "b-1.kafka.example:9096,b-2.kafka.example:9096",
        "securityProtocol": "SASL_SSL",
        "sasl": {"mechanism": "SCRAM-SHA-512"},
        "ssl": {"caSecret": {"secretName": "kafka-cluster-ca-cert"}},
    }
}
MTLS = {
    "kafka": {
        "bootstrapServers": "kafka-bootstrap.kafka:9093",
        "securityProtocol": "SSL",
        "ssl": {"caSecret": {"secretName": "kafka-cluster-ca-cert"}},
    }
}
# Client keys encrypted with a passphrase kept beside them in each principal's Secret.
MTLS_ENCRYPTED_KEYS = copy.deepcopy(MTLS)
MTLS_ENCRYPTED_KEYS["kafka"]["ssl"]["keyPasswordKey"] = "user.password"
KEDA = {"autoscaling": {"enabled": True, "keda": {"enabled": True}}}
HPA = {"autoscaling": {"enabled": True, "keda": {"enabled": False}}}
POLICIES = {
    "policies": {
        "refunds": {
            "bundle": (REFUNDS / "bundle.toml").read_text(),
            "rules": (REFUNDS / "rules.cedar").read_text(),
        }
    }
}
# Model-backed intake and planner: the models file, its API key from a Secret, and every workflow's
# bundle with its policy document (the planner reads both).
MODELS = {
    "models": {
        "file": (ROOT / "models.example.toml").read_text(),
        "apiKeys": [{"env": "AGENTBUS_MODEL_API_KEY", "secretName": "agentbus-model-api", "key": "api-key"}],
    },
    "policies": {
        workflow: {
            "bundle": (ROOT / "policies" / workflow / "bundle.toml").read_text(),
            "rules": (ROOT / "policies" / workflow / "rules.cedar").read_text(),
            "guide": (ROOT / "policies" / workflow / "policy.md").read_text(),
        }
        for workflow in ("refunds", "it_access")
    },
}
# A declared HTTP tool with its own executor group and its token from a Secret.
PAYMENTS_API = (ROOT / "tools" / "examples" / "payments_api.toml").read_text()
TOOLS = {
    "tools": {
        "files": {"payments_api": PAYMENTS_API},
        "secrets": [{"env": "PAYMENTS_API_TOKEN", "secretName": "payments-api-token", "key": "token"}],
    },
    "services": {"executor-payments-api": {"replicas": 2}},  # no resources: the chart's defaults
}
INGRESS = {
    "console": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "agentbus.ops.example",
            "tlsSecretName": "agentbus-console-tls",
        }
    }
}
SCALED_EXECUTOR = {"services": {"executor-commerce": {"replicas": 3}}}
EVERYTHING = {
    **copy.deepcopy(SASL),
    **KEDA,
    **MODELS,
    **INGRESS,
    "topicPrefix": "staging.",
    "otel": {"endpoint": "http://otel-collector.observability:4318"},
    "keys": {"audit": {"secretName": "agentbus-audit-signing"}},
    "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "keda": KEDA,
    "hpa": HPA,
    "sasl-scram": SASL,
    "mtls": MTLS,
    "mtls-keda": {**MTLS_ENCRYPTED_KEYS, **KEDA},
    "policies": POLICIES,
    "models": MODELS,
    "tools": TOOLS,
    "ingress": INGRESS,
    "scaled-executor": SCALED_EXECUTOR,
    "everything": EVERYTHING,
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm_python.Chart.load(CHART) as chart:
        rendered = chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE)
    return [doc for text in rendered.values() for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if doc]


@pytest.fixture(scope="module", autouse=True)
def schemas_read_once() -> Iterator[None]:
    """kubernetes-validate parses its 1.2 MB definitions file on every call; read each file once."""
    with pytest.MonkeyPatch.context() as patch:
        cached = functools.cache(kubernetes_validate.utils.schema_contents)
        patch.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind by their service (component label)."""
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def secret_names(deployment: dict[str, Any]) -> set[str]:
    """Every Secret a Deployment's pods can read: volumes, env, envFrom."""
    pod = deployment["spec"]["template"]["spec"]
    names = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for c in pod["containers"]:
        names |= {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        names |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
    return names


def strict(schema: Any) -> Any:
    """A CRD schema as the API server would apply it to our manifests, made strict like
    kubernetes-validate's strict schemas: an unknown field is an error, not silently pruned."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", kind): Draft7Validator(
        strict(yaml.safe_load((SCHEMAS / f"keda-{kind.lower()}-v1alpha1.yaml").read_text()))
    )
    for kind in ("ScaledObject", "TriggerAuthentication")
}


def unique_documents(manifests: dict[str, list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Each distinct manifest once (most are the same in every value set; validation is the slow part)."""
    seen: set[str] = set()
    for docs in manifests.values():
        for doc in docs:
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                yield doc


# --- validity --------------------------------------------------------------------------------------


def test_lint_reports_no_errors() -> None:
    for values in (VALUE_SETS["defaults"], VALUE_SETS["mtls-keda"], VALUE_SETS["everything"]):
        report = helm_python.lint(CHART, copy.deepcopy(values), strict=True, namespace=NAMESPACE)
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_manifest_validates(manifests: dict[str, list[dict[str, Any]]]) -> None:
    kinds: set[str] = set()
    for doc in unique_documents(manifests):
        kinds.add(doc["kind"])
        crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if crd is not None:
            errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd.iter_errors(doc)]
            assert errors == [], f"{doc['kind']} {doc['metadata']['name']}"
            continue
        kubernetes_validate.validate(doc, OLDEST_KUBERNETES, strict=True)
    for doc in manifests["everything"]:
        if doc["apiVersion"] != "keda.sh/v1alpha1":
            kubernetes_validate.validate(doc, NEWEST_KUBERNETES, strict=True)
    # Nothing skipped: every kind the chart can make was rendered and checked.
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Job",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "ScaledObject",
        "Service",
        "ServiceAccount",
        "TriggerAuthentication",
    }


def test_a_bad_field_is_caught_by_each_validator() -> None:
    """The checks can fail: a misspelt field is refused by the Kubernetes schemas and by the KEDA schema."""
    docs = render(KEDA)
    deployment = copy.deepcopy(of_kind(docs, "Deployment")["policy"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, OLDEST_KUBERNETES, strict=True)
    scaled = copy.deepcopy(of_kind(docs, "ScaledObject")["policy"])
    scaled["spec"]["maxReplicas"] = 3  # KEDA calls it maxReplicaCount
    assert list(CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")].iter_errors(scaled))


# --- what every service gets -----------------------------------------------------------------------


@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_service_has_its_own_deployment_identity_budget_and_network_policy(
    manifests: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    docs = manifests[value_set]
    expected = sorted({*SERVICES, *VALUE_SETS[value_set].get("services", {})})  # plus any the set adds
    for kind in ("Deployment", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"):
        assert sorted(set(of_kind(docs, kind)) - {"init"}) == expected, kind
    accounts = of_kind(docs, "ServiceAccount")
    for name, deployment in of_kind(docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == accounts[name]["metadata"]["name"] == f"{RELEASE}-{name}"
        assert pod["automountServiceAccountToken"] is False
        c = container(deployment)
        assert c["readinessProbe"] and c["livenessProbe"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["requests"]
        # PDB and NetworkPolicy select exactly this service's pods.
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for kind in ("PodDisruptionBudget",):
            assert of_kind(docs, kind)[name]["spec"]["selector"]["matchLabels"] == labels
        assert of_kind(docs, "NetworkPolicy")[name]["spec"]["podSelector"]["matchLabels"] == labels


def test_each_service_runs_its_program(manifests: dict[str, list[dict[str, Any]]]) -> None:
    deployments = of_kind(manifests["defaults"], "Deployment")
    commands = {name: container(d)["command"] for name, d in deployments.items()}
    assert commands["reconciler"] == ["python", "-m", "agentbus.reconciler"]
    assert commands["trace-sink"] == ["faststream", "run", "agentbus.trace_sink.app:app"]
    for group in EXECUTOR_GROUPS:
        c = container(deployments[f"executor-{group}"])
        assert c["command"] == ["faststream", "run", "agentbus.executor.app:app"]
        assert env(c)["AGENTBUS_EXECUTOR_GROUPS"]["value"] == group


# --- keys: each in the one service that uses it ------------------------------------------------------


def test_each_key_is_mounted_only_into_the_service_that_uses_it(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    deployments = of_kind(manifests["everything"], "Deployment")
    holders = {
        "agentbus-capability-signing": {"policy"},
        "agentbus-capability-verify": {f"executor-{g}" for g in EXECUTOR_GROUPS},
        "agentbus-pii-master": {"intake"},
        "agentbus-audit-signing": {"trace-sink"},
        "agentbus-identities": {"escalation", "console"},
        "agentbus-database": set(SERVICES) - {"console"},
        "agentbus-model-api": {"intake", "planner"},
    }
    for secret, services in holders.items():
        assert {name for name, d in deployments.items() if secret in secret_names(d)} == services, secret
    policy = container(deployments["policy"])
    assert env(policy)["AGENTBUS_SIGNING_KEY_FILE"]["value"] == "/etc/agentbus/signing/policy-1.key"
    trace_sink = env(container(deployments["trace-sink"]))
    assert trace_sink["AGENTBUS_AUDIT_SIGNING_KEY_FILE"]["value"] == "/etc/agentbus/audit-key/audit-1.key"
    assert trace_sink["AGENTBUS_AUDIT_CHECKPOINT_DIR"]["value"] == "/var/lib/agentbus/audit-checkpoints"
    for name, d in deployments.items():
        if name != "policy":
            assert not {"AGENTBUS_SIGNING_KEY", "AGENTBUS_SIGNING_KEY_FILE"} & env(container(d)).keys(), name


def test_audit_checkpoints_only_with_an_audit_key(manifests: dict[str, list[dict[str, Any]]]) -> None:
    assert not [d for d in manifests["defaults"] if d["kind"] == "PersistentVolumeClaim"]
    assert "AGENTBUS_AUDIT_SIGNING_KEY_FILE" not in env(
        container(of_kind(manifests["defaults"], "Deployment")["trace-sink"])
    )
    (claim,) = [d for d in manifests["everything"] if d["kind"] == "PersistentVolumeClaim"]
    volumes = of_kind(manifests["everything"], "Deployment")["trace-sink"]["spec"]["template"]["spec"][
        "volumes"
    ]
    assert {
        "name": "audit-checkpoints",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    } in volumes


# --- Kafka identity and credentials ----------------------------------------------------------------


def principal(service: str) -> str:
    return "agentbus-executor" if service.startswith("executor-") else f"agentbus-{service}"


def test_each_service_is_its_own_sasl_principal_with_the_password_from_its_secret(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["sasl-scram"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    pods = {name: container(d) for name, d in of_kind(docs, "Deployment").items()} | {
        "init": job["spec"]["template"]["spec"]["containers"][0]
    }
    for name, c in pods.items():
        e = env(c)
        assert e["AGENTBUS_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert e["AGENTBUS_KAFKA_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert e["AGENTBUS_KAFKA_SASL_USERNAME"]["value"] == principal(name)
        password = e["AGENTBUS_KAFKA_SASL_PASSWORD"]
        assert "value" not in password
        assert password["valueFrom"]["secretKeyRef"] == {"name": principal(name), "key": "password"}
        assert e["AGENTBUS_KAFKA_SSL_CAFILE"]["value"] == "/etc/agentbus/kafka-ca/ca.crt"
        assert "AGENTBUS_KAFKA_SSL_CERTFILE" not in e  # the SASL user is the identity, not a certificate
    # A password given as a literal anywhere would show up in the rendered text: there is none.
    assert "password:" not in yaml.safe_dump_all(docs).replace("key: password", "")


def test_each_principal_is_granted_its_own_groups_by_the_acl_plan(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    """The usernames the chart gives are the ACL plan's principals, and the consumer groups KEDA
    watches for a service are ones the plan lets that principal use."""
    plan = acl_plan("staging.")
    by_principal = {DEFAULT_PRINCIPAL.format(identity=a.identity): a.identity for a in plan}
    docs = manifests["everything"]  # SASL, KEDA, prefix "staging."
    for name, d in of_kind(docs, "Deployment").items():
        username = env(container(d))["AGENTBUS_KAFKA_SASL_USERNAME"]["value"]
        identity = by_principal[f"User:{username}"]
        for trigger in of_kind(docs, "ScaledObject").get(name, {"spec": {"triggers": []}})["spec"][
            "triggers"
        ]:
            assert granted(plan, identity, "Read", "group", trigger["metadata"]["consumerGroup"]), name
    (job,) = [d for d in docs if d["kind"] == "Job"]
    username = env(job["spec"]["template"]["spec"]["containers"][0])["AGENTBUS_KAFKA_SASL_USERNAME"]["value"]
    assert granted(plan, by_principal[f"User:{username}"], "Create", "topic", "staging.agentbus.control.v1")


def test_the_principal_prefix_is_a_value() -> None:
    docs = render({**SASL, "kafka": {**SASL["kafka"], "principalPrefix": "prod-ab-"}})
    c = container(of_kind(docs, "Deployment")["executor-helpdesk"])
    assert env(c)["AGENTBUS_KAFKA_SASL_USERNAME"]["value"] == "prod-ab-executor"
    assert env(c)["AGENTBUS_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "prod-ab-executor"


def test_mtls_mounts_each_service_its_own_client_certificate(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    for name, d in of_kind(manifests["mtls"], "Deployment").items():
        c = container(d)
        e = env(c)
        assert e["AGENTBUS_KAFKA_SECURITY_PROTOCOL"]["value"] == "SSL"
        assert "AGENTBUS_KAFKA_SASL_PASSWORD" not in e
        assert e["AGENTBUS_KAFKA_SSL_CERTFILE"]["value"] == "/etc/agentbus/kafka-client/tls.crt"
        assert e["AGENTBUS_KAFKA_SSL_KEYFILE"]["value"] == "/etc/agentbus/kafka-client/tls.key"
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-client"]["secret"]["secretName"] == principal(name)
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["kafka-client"] == {
            "name": "kafka-client",
            "mountPath": "/etc/agentbus/kafka-client",
            "readOnly": True,
        }
        assert mounts["kafka-ca"]["readOnly"] is True
        assert "AGENTBUS_KAFKA_SSL_KEY_PASSWORD" not in e  # the keys are not encrypted


def test_an_encrypted_client_key_gets_its_passphrase_from_the_principals_secret(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["mtls-keda"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    pods = {name: d["spec"]["template"]["spec"] for name, d in of_kind(docs, "Deployment").items()}
    pods["init"] = job["spec"]["template"]["spec"]
    for name, pod in pods.items():
        password = env(pod["containers"][0])["AGENTBUS_KAFKA_SSL_KEY_PASSWORD"]
        assert password == {
            "name": "AGENTBUS_KAFKA_SSL_KEY_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": principal(name), "key": "user.password"}},
        }, name


def test_plaintext_by_default_with_no_credentials(manifests: dict[str, list[dict[str, Any]]]) -> None:
    for d in of_kind(manifests["defaults"], "Deployment").values():
        e = env(container(d))
        assert e["AGENTBUS_KAFKA_SECURITY_PROTOCOL"]["value"] == "PLAINTEXT"
        assert not [k for k in e if k.startswith(("AGENTBUS_KAFKA_SASL", "AGENTBUS_KAFKA_SSL"))]


# --- autoscaling -----------------------------------------------------------------------------------


def expected_triggers(service: str, prefix: str) -> set[tuple[str, str | None]]:
    """(consumer group, topic) of every group the service's code consumes with (agentbus.shared.topics)."""
    if service == "trace-sink":
        return {(f"{prefix}agentbus.trace-sink", None)}
    program = "executor" if service.startswith("executor-") else service
    return {
        (consumer_group(service, spec, prefix), topic_name(spec, prefix))
        for spec in SERVICE_TOPICS[program][0]
    }


@pytest.mark.parametrize(("value_set", "prefix"), [("keda", ""), ("everything", "staging.")])
def test_keda_scales_each_stage_on_the_lag_of_its_own_consumer_groups(
    manifests: dict[str, list[dict[str, Any]]], value_set: str, prefix: str
) -> None:
    docs = manifests[value_set]
    scaled = of_kind(docs, "ScaledObject")
    assert sorted(scaled) == SCALABLE
    assert of_kind(docs, "HorizontalPodAutoscaler") == {}
    deployments = of_kind(docs, "Deployment")
    for name, so in scaled.items():
        assert so["spec"]["scaleTargetRef"]["name"] == deployments[name]["metadata"]["name"]
        assert "replicas" not in deployments[name]["spec"]  # the autoscaler owns the count
        triggers = so["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        got = {(t["metadata"]["consumerGroup"], t["metadata"].get("topic")) for t in triggers}
        assert got == expected_triggers(name, prefix), name
        assert {t["metadata"]["offsetResetPolicy"] for t in triggers} == {"earliest"}


def test_keda_connects_as_the_service_principal(manifests: dict[str, list[dict[str, Any]]]) -> None:
    docs = manifests["everything"]  # SASL_SSL
    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    for name, so in of_kind(docs, "ScaledObject").items():
        for t in so["spec"]["triggers"]:
            assert t["metadata"]["sasl"] == "scram_sha512" and t["metadata"]["tls"] == "enable"
            auth = auths[t["authenticationRef"]["name"]]["spec"]
            assert auth["env"] == [
                {"parameter": "username", "name": "AGENTBUS_KAFKA_SASL_USERNAME", "containerName": name}
            ]
            refs = {r["parameter"]: r for r in auth["secretTargetRef"]}
            assert refs["password"] == {"parameter": "password", "name": principal(name), "key": "password"}
    mtls = manifests["mtls-keda"]
    auths = {d["metadata"]["name"]: d for d in mtls if d["kind"] == "TriggerAuthentication"}
    for name in SCALABLE:
        refs = {
            r["parameter"]: r["name"] for r in auths[f"{RELEASE}-{name}-kafka"]["spec"]["secretTargetRef"]
        }
        assert refs == {"ca": "kafka-cluster-ca-cert", "cert": principal(name), "key": principal(name)}


def test_hpa_fallback_when_keda_is_off(manifests: dict[str, list[dict[str, Any]]]) -> None:
    docs = manifests["hpa"]
    assert of_kind(docs, "ScaledObject") == {}
    assert not [d for d in docs if d["kind"] == "TriggerAuthentication"]
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert sorted(hpas) == SCALABLE
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"{RELEASE}-{name}",
        }
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)


def test_no_autoscaler_by_default_and_fixed_replicas(manifests: dict[str, list[dict[str, Any]]]) -> None:
    docs = manifests["defaults"]
    assert not [d for d in docs if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")]
    assert {d["spec"]["replicas"] for d in of_kind(docs, "Deployment").values()} == {1}
    scaled = of_kind(manifests["scaled-executor"], "Deployment")
    assert scaled["executor-commerce"]["spec"]["replicas"] == 3
    assert scaled["executor-helpdesk"]["spec"]["replicas"] == 1


def test_zero_replicas_stops_a_stage_even_when_autoscaled() -> None:
    stop = {"services": {"executor-commerce": {"replicas": 0}}}
    keda = render({**KEDA, **stop})
    assert of_kind(keda, "Deployment")["executor-commerce"]["spec"]["replicas"] == 0
    paused = of_kind(keda, "ScaledObject")["executor-commerce"]["metadata"]["annotations"]
    assert paused == {"autoscaling.keda.sh/paused-replicas": "0"}
    assert "annotations" not in of_kind(keda, "ScaledObject")["executor-directory"]["metadata"]
    hpa = render({**HPA, **stop})
    assert of_kind(hpa, "Deployment")["executor-commerce"]["spec"]["replicas"] == 0
    assert "executor-commerce" not in of_kind(hpa, "HorizontalPodAutoscaler")


def test_per_service_autoscaling_override() -> None:
    docs = render(
        {
            **KEDA,
            "services": {
                "planner": {"autoscaling": {"enabled": False}},
                "policy": {"autoscaling": {"maxReplicas": 2}},
            },
        }
    )
    scaled = of_kind(docs, "ScaledObject")
    assert "planner" not in scaled and of_kind(docs, "Deployment")["planner"]["spec"]["replicas"] == 1
    assert scaled["policy"]["spec"]["maxReplicaCount"] == 2


# --- policies, console, network ----------------------------------------------------------------------


def test_policy_bundles_ship_byte_for_byte_into_the_decider_only(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["policies"]
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert config["data"] == {
        "refunds.bundle.toml": (REFUNDS / "bundle.toml").read_text(),
        "refunds.rules.cedar": (REFUNDS / "rules.cedar").read_text(),
    }
    deployments = of_kind(docs, "Deployment")
    mounting = {
        name
        for name, d in deployments.items()
        if any(
            v.get("configMap", {}).get("name") == config["metadata"]["name"]
            for v in d["spec"]["template"]["spec"]["volumes"]
        )
    }
    assert mounting == {"policy"}
    policy = deployments["policy"]
    (volume,) = [v for v in policy["spec"]["template"]["spec"]["volumes"] if v["name"] == "policies"]
    assert {i["path"] for i in volume["configMap"]["items"]} == {"refunds/bundle.toml", "refunds/rules.cedar"}
    assert env(container(policy))["AGENTBUS_POLICIES_DIR"]["value"] == "/etc/agentbus/policies"
    # Without bundles in values, no ConfigMap and the image's bundles.
    assert not [d for d in manifests["defaults"] if d["kind"] == "ConfigMap"]
    assert "AGENTBUS_POLICIES_DIR" not in env(
        container(of_kind(manifests["defaults"], "Deployment")["policy"])
    )


def mounted_file(docs: list[dict[str, Any]], deployment: dict[str, Any], path: str) -> str:
    """The text a container reads at `path`, followed through its volume mounts to a ConfigMap."""
    pod = deployment["spec"]["template"]["spec"]
    (mount,) = [m for m in container(deployment)["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (config,) = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    inside = path.removeprefix(mount["mountPath"] + "/")
    items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in config["data"]]
    (key,) = [i["key"] for i in items if i["path"] == inside]
    return str(config["data"][key])


def test_models_reach_the_intake_and_the_planner_only_with_keys_from_a_secret(
    manifests: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    docs = manifests["models"]
    deployments = of_kind(docs, "Deployment")
    models = (ROOT / "models.example.toml").read_text()
    readers = {name for name, d in deployments.items() if "AGENTBUS_MODELS_FILE" in env(container(d))}
    assert readers == {"intake", "planner"}
    for name in readers:
        e = env(container(deployments[name]))
        mounted = mounted_file(docs, deployments[name], e["AGENTBUS_MODELS_FILE"]["value"])
        assert mounted == models
        (tmp_path / f"{name}.toml").write_text(mounted)
        loaded = load_models(tmp_path / f"{name}.toml")  # as the service loads it
        assert loaded.intake is not None and {"refunds", "it_access"} <= loaded.workflows.keys()
        assert e["AGENTBUS_MODEL_API_KEY"]["valueFrom"] == {
            "secretKeyRef": {"name": "agentbus-model-api", "key": "api-key"}
        }
    assert not [d for d in manifests["defaults"] if d["metadata"]["name"].endswith("-models")]
    assert "AGENTBUS_MODELS_FILE" not in env(
        container(of_kind(manifests["defaults"], "Deployment")["planner"])
    )


def test_the_model_planner_reads_the_bundles_the_decider_enforces(
    manifests: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    docs = manifests["models"]
    deployments = of_kind(docs, "Deployment")
    planner, decider = deployments["planner"], deployments["policy"]
    planner_dir = env(container(planner))["AGENTBUS_POLICIES_DIR"]["value"]
    decider_dir = env(container(decider))["AGENTBUS_POLICIES_DIR"]["value"]
    for workflow in ("refunds", "it_access"):
        source = ROOT / "policies" / workflow
        bundle = mounted_file(docs, planner, f"{planner_dir}/{workflow}/bundle.toml")
        assert bundle == mounted_file(docs, decider, f"{decider_dir}/{workflow}/bundle.toml")
        assert bundle == (source / "bundle.toml").read_text()
        guide = mounted_file(docs, planner, f"{planner_dir}/{workflow}/policy.md")
        assert guide == (source / "policy.md").read_text()
        # What the planner makes of the mounted files: the workflow's policy sections.
        (tmp_path / workflow).mkdir()
        (tmp_path / workflow / "policy.md").write_text(guide)
        assert PolicyLibrary(tmp_path).index(workflow).sections
    # A bundle change rolls the planner (it loads bundles once); the decider reloads on its own.
    changed = copy.deepcopy(MODELS)
    changed["policies"]["refunds"]["bundle"] += "\n# v2\n"
    annotations = of_kind(render(changed), "Deployment")["planner"]["spec"]["template"]["metadata"][
        "annotations"
    ]
    before = planner["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/policies"] != before["checksum/policies"]
    assert annotations["checksum/models"] == before["checksum/models"]


def test_declared_tools_reach_every_registry_reader_and_their_token_only_the_executors(
    manifests: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    docs = manifests["tools"]
    deployments = of_kind(docs, "Deployment")
    readers = {name for name, d in deployments.items() if "AGENTBUS_TOOLS_DIR" in env(container(d))}
    executors = {name for name in deployments if name.startswith("executor-")}
    assert readers == {"planner", "verifier", "console", "reconciler"} | executors
    for name in readers:
        tools_dir = env(container(deployments[name]))["AGENTBUS_TOOLS_DIR"]["value"]
        mounted = mounted_file(docs, deployments[name], f"{tools_dir}/payments_api.toml")
        assert mounted == PAYMENTS_API, name
    # What the services make of the mounted file: the tool, in its own group, with its executor.
    (tmp_path / "payments_api.toml").write_text(mounted)
    registry = load_registry(tmp_path)
    assert "payments_api.refund" in registry and "payments-api" in registry.groups()
    assert "executor-payments-api" in executors
    added = deployments["executor-payments-api"]
    assert added["spec"]["replicas"] == 2
    assert container(added)["resources"] == {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }
    holders = {n for n, d in deployments.items() if "payments-api-token" in secret_names(d)}
    assert holders == executors
    token = env(container(deployments["executor-payments-api"]))["PAYMENTS_API_TOKEN"]
    assert token["valueFrom"] == {"secretKeyRef": {"name": "payments-api-token", "key": "token"}}
    # A changed declaration rolls its readers (each loads the registry once).
    changed = copy.deepcopy(TOOLS)
    changed["tools"]["files"]["payments_api"] += "\n# v2\n"
    after = of_kind(render(changed), "Deployment")["verifier"]["spec"]["template"]["metadata"]["annotations"]
    before = deployments["verifier"]["spec"]["template"]["metadata"]["annotations"]
    assert after["checksum/tools"] != before["checksum/tools"]
    assert "AGENTBUS_TOOLS_DIR" not in env(container(of_kind(manifests["defaults"], "Deployment")["planner"]))


def test_a_tool_file_name_that_is_not_a_plain_name_is_refused() -> None:
    with pytest.raises(helm_python.HelmError, match=r"tools\.files\.\.\./x: name a declaration"):
        render({"tools": {"files": {"../x": PAYMENTS_API}}})


def test_with_models_each_workflow_needs_its_policy_document() -> None:
    values = copy.deepcopy(MODELS)
    del values["policies"]["it_access"]["guide"]
    with pytest.raises(helm_python.HelmError, match=r"policies\.it_access\.guide: the model planner reads"):
        render(values)


def test_a_bundle_without_its_rules_is_refused() -> None:
    with pytest.raises(helm_python.HelmError, match=r"policies\.refunds needs both files"):
        render({"policies": {"refunds": {"bundle": "x"}}})


def test_an_unknown_service_name_is_refused() -> None:
    with pytest.raises(helm_python.HelmError, match=r"services\.plnner: unknown service"):
        render({"services": {"plnner": {"replicas": 1}}})


def test_console_is_reachable_through_its_service_and_ingress(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["ingress"]
    services = of_kind(docs, "Service")
    assert sorted(services) == ["console", "escalation"]
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "agentbus.ops.example"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == services["console"]["metadata"]["name"]
    assert ingress["spec"]["tls"] == [
        {"hosts": ["agentbus.ops.example"], "secretName": "agentbus-console-tls"}
    ]
    console = env(container(of_kind(docs, "Deployment")["console"]))
    assert (
        console["AGENTBUS_CONSOLE_APPROVALS_URL"]["value"]
        == f"http://{services['escalation']['metadata']['name']}:8081"
    )
    assert console["AGENTBUS_CONSOLE_TOKENS_FILE"]["value"] == "/etc/agentbus/identities/identities.toml"
    assert not [d for d in manifests["defaults"] if d["kind"] == "Ingress"]


def test_network_policies_open_only_what_each_service_needs(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    policies = of_kind(manifests["sasl-scram"], "NetworkPolicy")
    del policies["init"]  # the Job has its own test below
    for name, np in policies.items():
        ports = {p["port"] for rule in np["spec"]["egress"] for p in rule.get("ports", [])}
        assert 9096 in ports  # Kafka's port, from bootstrapServers
        assert (5432 in ports) is (name != "console")  # the console has no database
        ingress_ports = {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]}
        assert ingress_ports == ({"metrics", "http"} if name in ("console", "escalation") else {"metrics"})
    (approvals,) = [r for r in policies["escalation"]["spec"]["ingress"] if r["ports"][0]["port"] == "http"]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in approvals["from"]] == [
        "console"
    ]


def test_the_init_job_reaches_only_dns_kafka_and_postgres_from_before_it_starts(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["sasl-scram"]
    policy = of_kind(docs, "NetworkPolicy")["init"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert selector["app.kubernetes.io/component"] == "init"
    assert policy["spec"]["ingress"] == [] and policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    ports = sorted((p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert ports == [(53, "TCP"), (53, "UDP"), (5432, "TCP"), (9096, "TCP")]
    # A pre-install hook, in place before the Job's pod runs.
    hooks = policy["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(hooks["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert not [d for d in render({"networkPolicy": {"enabled": False}}) if d["kind"] == "NetworkPolicy"]


def test_init_job_is_its_own_principal_with_its_own_service_account(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["mtls"]
    (job,) = [d for d in docs if d["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    (account,) = [
        d
        for d in docs
        if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == pod["serviceAccountName"]
    ]
    # Created before the pre-install Job that uses it.
    assert int(account["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["kafka-client"]["secret"]["secretName"] == "agentbus-init"


def test_the_init_job_creates_topics_with_the_replication_the_values_ask_for() -> None:
    def init_env(values: dict[str, Any]) -> dict[str, Any]:
        (job,) = [d for d in render(values) if d["kind"] == "Job"]
        return {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert init_env({})["AGENTBUS_TOPIC_REPLICATION_FACTOR"] == "3"
    single = init_env({"kafka": {"topics": {"replicationFactor": 1, "partitions": 6}}})
    assert (single["AGENTBUS_TOPIC_REPLICATION_FACTOR"], single["AGENTBUS_TOPIC_PARTITIONS"]) == ("1", "6")
