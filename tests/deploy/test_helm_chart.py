"""The Helm chart, rendered by Helm's engine: schema, Kubernetes validity, security, wiring.

Everything runs offline: ``helm_python`` renders and lints with Helm's Go library, and
``kubernetes_validate`` checks each object against the Kubernetes OpenAPI schemas it ships.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

import service
from service.ruleset.loader import load_ruleset
from service.settings import PACKAGED_RULES_DIR
from tests.deploy.conftest import (
    CHART_DIR,
    CI_VALUES,
    FULLNAME,
    REPO,
    Manifest,
    Render,
    container,
    env,
    kinds,
    merge,
    notes,
    only,
    pod_annotations,
    render_chart,
    secret_data,
    server_pod,
)

CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))
VALUES_TEXT = (CHART_DIR / "values.yaml").read_text(encoding="utf-8")
VALUES = yaml.safe_load(VALUES_TEXT)
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))

# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the newest one whose
# schemas kubernetes-validate ships.
_KUBE_FLOOR = re.fullmatch(r">=(\d+\.\d+)\.\d+-0", CHART["kubeVersion"])
assert _KUBE_FLOOR, CHART["kubeVersion"]
MIN_KUBE = _KUBE_FLOOR.group(1)
LATEST_KUBE = kv_utils.major_minor(kv_utils.latest_version())
# Custom resources have no schema in Kubernetes' own OpenAPI: checked structurally below.
CRD_KINDS = {"ServiceMonitor"}

SCENARIOS: dict[str, dict[str, Any]] = {
    # ci/ci-values.yaml alone: the defaults plus the two required values
    "defaults": {},
    "ingress-on": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "tls": [{"secretName": "osteoguard-tls", "hosts": ["osteoguard.example.org"]}],
        }
    },
    "hpa-off": {"autoscaling": {"enabled": False}, "replicaCount": 3},
    "existing-secret": {
        "secrets": {"existingSecret": "osteoguard-prod"},
        "patientHashKey": {"enabled": True},
    },
    "custom-rules": {"rules": {"existingConfigMap": "clinical-rules", "checksum": "sha256:abc"}},
    "auth-off-acknowledged": {"auth": {"mode": "off", "iUnderstandThisIsUnauthenticated": True}},
    # every optional object and list on at once
    "everything-on": {
        "ingress": {"enabled": True},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "patientHashKey": {"enabled": True, "value": "0123456789abcdef0123456789abcdef"},
        "networkPolicy": {
            "ingressFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}}],
            "egress": {"extraRules": [{"ports": [{"port": 3128, "protocol": "TCP"}]}]},
        },
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "auth": {"corsOrigins": ["https://ehr.example.org"]},
        "autoscaling": {"targetMemoryUtilizationPercentage": 80, "behavior": {"scaleDown": {"policies": []}}},
        "imagePullSecrets": [{"name": "regcred"}],
        "priorityClassName": "clinical",
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "clinical", "operator": "Exists", "effect": "NoSchedule"}],
        "serviceAccount": {"annotations": {"example.org/role": "osteoguard"}},
    },
    # OpenShift's restricted SCC assigns the uid and gid itself
    "platform-assigned-uids": {
        "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
        "securityContext": {"runAsUser": None, "runAsGroup": None},
    },
}


def values_keys(node: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every key in a values tree (list items are not descended into)."""
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            keys.add(path)
            keys |= values_keys(value, path + ".")
    return keys


def schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        keys.add(path)
        keys |= schema_keys(sub, path + ".")
    return keys


def closed_schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
    """Keys of the objects the schema closes (additionalProperties false): values.yaml must show them."""
    keys: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if node.get("additionalProperties") is False:
            keys.add(path)
        keys |= closed_schema_keys(sub, path + ".")
    return keys


# ---- the chart's own files --------------------------------------------------------------------
def test_chart_metadata_is_helm_v2_with_kube_and_app_versions() -> None:
    assert CHART["apiVersion"] == "v2"
    assert CHART["type"] == "application"
    assert re.fullmatch(r">=1\.\d+\.0-0", CHART["kubeVersion"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", CHART["version"])


def test_app_version_is_the_package_version() -> None:
    # Chart.yaml cannot import Python: its copy of the version is checked here instead.
    assert CHART["appVersion"] == service.__version__


def test_chart_lints_clean() -> None:
    report = helm.lint(CHART_DIR, CI_VALUES, strict=True, kube_version=f"v{MIN_KUBE}.0")
    assert report["errors"] == []
    # severity 1 is "info" (e.g. "icon is recommended"); warnings and errors fail
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_values_key_is_commented() -> None:
    uncommented = []
    previous = ""
    for number, line in enumerate(VALUES_TEXT.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        is_key = re.match(r"^\s*[A-Za-z][\w.-]*:", line) is not None
        if is_key and not previous.startswith(("#", "- #")) and "#" not in line:
            uncommented.append(f"values.yaml:{number}: {stripped}")
        previous = stripped
    assert uncommented == []


def test_schema_is_draft_07_and_closed_at_the_top_level() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA["type"] == "object"
    assert SCHEMA["additionalProperties"] is False


def test_schema_describes_every_values_key() -> None:
    assert values_keys(VALUES) - schema_keys(SCHEMA) == set()


def test_values_yaml_shows_every_key_of_the_closed_schema_objects() -> None:
    # The schema is written by hand: with the test above, this keeps it and values.yaml in step.
    optional = {  # keys the schema accepts that values.yaml leaves out on purpose
        "podSecurityContext.fsGroupChangePolicy",
        "podSecurityContext.supplementalGroups",
        "podSecurityContext.seccompProfile.localhostProfile",
        "securityContext.capabilities.add",
        "securityContext.seccompProfile.localhostProfile",
        "resources.requests.ephemeral-storage",
        "resources.limits.cpu",
        "resources.limits.ephemeral-storage",
    }
    assert closed_schema_keys(SCHEMA) - values_keys(VALUES) == optional


def test_ci_values_pass_the_schema() -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(CI_VALUES)


# ---- the schema refuses wrong values before anything renders ---------------------------------
@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        # a number as a string
        ({"replicaCount": "3"}, "/replicaCount"),
        # YAML 1.1 reads a bare `off` as false: refused, not taken as "off"
        ({"auth": {"mode": False}}, "/auth/mode"),
        # a typo at the top level
        ({"replicas": 3}, "replicas"),
        ({"autoscaling": {"enabled": "yes"}}, "/autoscaling/enabled"),
        ({"service": {"port": "80"}}, "/service/port"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext/readOnlyRootFilesystem"),
        (
            {"securityContext": {"allowPrivilegeEscalation": True}},
            "/securityContext/allowPrivilegeEscalation",
        ),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
        ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
        ({"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}, "/securityContext/capabilities/drop"),
        ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, "/securityContext/seccompProfile"),
        # a trusted client needs exactly one of jwks_url and jwks
        ({"auth": {"trustedClients": [{"iss": "https://ehr.example.org"}]}}, "/auth/trustedClients/0"),
        # JWKS only over https
        (
            {"auth": {"trustedClients": [{"iss": "x", "jwks_url": "http://ehr.example.org/jwks"}]}},
            "/auth/trustedClients/0",
        ),
        ({"database": {"url": "mysql://db/osteoguard"}}, "/database/url"),
        ({"logLevel": "verbose"}, "/logLevel"),
        ({"fhirTimeoutSeconds": 0}, "/fhirTimeoutSeconds"),
        ({"limits": {"maxHeaderBytes": 100}}, "/limits/maxHeaderBytes"),
        ({"limits": {"headerTimeoutSeconds": 0}}, "/limits/headerTimeoutSeconds"),
        ({"limits": {"bodyTimeoutSeconds": "30s"}}, "/limits/bodyTimeoutSeconds"),
        ({"limits": {"maxConnections": 0}}, "/limits/maxConnections"),
        ({"limits": {"fhirMaxBytes": 1.5}}, "/limits/fhirMaxBytes"),
        ({"limits": {"maxHeaderByte": 4096}}, "/limits"),
        ({"server": {"maxInFlight": 0}}, "/server/maxInFlight"),
        ({"server": {"maxLoopLagMs": 0}}, "/server/maxLoopLagMs"),
        ({"rules": {"existingConfigMapRules": ["baseline-dexa"]}}, "/rules/existingConfigMapRules/0"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"resources": {"requests": {"cpu": "a lot"}}}, "/resources/requests/cpu"),
    ],
)
def test_schema_refuses(render: Render, overrides: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match="schema") as refused:
        render(overrides)
    assert where in str(refused.value)


# ---- what the chart refuses to render ----------------------------------------------------------
def test_bare_defaults_ask_for_the_trusted_clients(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="auth.trustedClients"):
        render(base={})


def test_bare_defaults_ask_for_the_database_url(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="database.url is required"):
        render(base={"auth": CI_VALUES["auth"]})


def test_auth_off_without_acknowledgement_refuses_to_render(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="iUnderstandThisIsUnauthenticated"):
        render({"auth": {"mode": "off"}})


def test_sqlite_with_several_pods_refuses_to_render(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="SQLite"):
        render({"database": {"url": "sqlite:////var/lib/osteoguard/osteoguard.db"}})


def test_patient_hash_key_enabled_without_a_key_refuses_to_render(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="patientHashKey.value"):
        render({"patientHashKey": {"enabled": True}})


def test_both_pdb_bounds_refuse_to_render(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="not both"):
        render({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}})


def test_grace_period_shorter_than_the_drain_refuses_to_render(render: Render) -> None:
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render({"terminationGracePeriodSeconds": 10})


# ---- Kubernetes validity -----------------------------------------------------------------------
@pytest.mark.parametrize("kube", [MIN_KUBE, LATEST_KUBE])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_rendered_objects_validate_against_kubernetes(render: Render, scenario: str, kube: str) -> None:
    objects = render(SCENARIOS[scenario])
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        # strict: unknown fields (a typo in a template) fail too
        kubernetes_validate.validate(obj, kube, strict=True)


def test_validation_catches_a_misplaced_field(render: Render) -> None:
    deployment = only(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, LATEST_KUBE, strict=True)


def test_default_objects(render: Render) -> None:
    assert kinds(render()) == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "Pod",  # the helm test hook
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
        ]
    )


def test_every_object_is_namespaced_and_labelled(render: Render) -> None:
    for obj in render(SCENARIOS["everything-on"]):
        meta = obj["metadata"]
        assert meta["namespace"] == "clinical", obj["kind"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "og", obj["kind"]
        assert meta["labels"]["app.kubernetes.io/name"] == "osteoguard", obj["kind"]


def test_servicemonitor_scrapes_metrics_on_the_service_http_port(render: Render) -> None:
    objects = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor, service = only(objects, "ServiceMonitor"), only(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert re.fullmatch(r"\d+s", endpoint["interval"]) and re.fullmatch(r"\d+s", endpoint["scrapeTimeout"])


def test_servicemonitor_and_ingress_are_off_by_default(render: Render) -> None:
    assert {"ServiceMonitor", "Ingress"} & set(kinds(render())) == set()


# ---- security ----------------------------------------------------------------------------------
def test_pod_runs_as_uid_10001_never_root(render: Render) -> None:
    pod = server_pod(render())["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"]) == (10001, 10001)


def test_container_root_filesystem_is_read_only(render: Render) -> None:
    context = container(render())["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["runAsNonRoot"] is True


def test_container_drops_every_capability_and_cannot_escalate(render: Render) -> None:
    context = container(render())["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False


def test_seccomp_is_runtime_default(render: Render) -> None:
    objects = render()
    assert server_pod(objects)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container(objects)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_no_service_account_token_is_mounted(render: Render) -> None:
    objects = render()
    assert only(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    assert server_pod(objects)["automountServiceAccountToken"] is False
    assert server_pod(objects)["serviceAccountName"] == FULLNAME


def test_only_tmp_and_the_data_dir_are_writable(render: Render) -> None:
    objects = render(SCENARIOS["everything-on"])
    volumes = {v["name"]: v for v in server_pod(objects)["volumes"]}
    writable = {
        m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"] if not m.get("readOnly")
    }
    assert sorted(writable) == ["/tmp", "/var/lib/osteoguard", "/var/lib/osteoguard/audit-spool"]
    assert all(
        "emptyDir" in volumes[name] and volumes[name]["emptyDir"]["sizeLimit"] for name in writable.values()
    )


def test_the_audit_spool_has_its_own_volume_and_settings(render: Render) -> None:
    objects = render({"audit": {"maxAgeMs": 150, "spool": {"maxBytes": 134217728, "sizeLimit": "512Mi"}}})
    variables = env(objects)
    assert variables["OSTEOGUARD_AUDIT_SPOOL_DIR"] == "/var/lib/osteoguard/audit-spool"
    assert variables["OSTEOGUARD_AUDIT_SPOOL_MAX_BYTES"] == "134217728"
    assert variables["OSTEOGUARD_AUDIT_MAX_AGE_MS"] == "150"
    volumes = {v["name"]: v for v in server_pod(objects)["volumes"]}
    assert volumes["audit-spool"] == {"name": "audit-spool", "emptyDir": {"sizeLimit": "512Mi"}}


def test_the_audit_spool_can_live_on_an_existing_claim(render: Render) -> None:
    objects = render({"audit": {"spool": {"existingClaim": "osteoguard-spool"}}})
    volumes = {v["name"]: v for v in server_pod(objects)["volumes"]}
    assert volumes["audit-spool"]["persistentVolumeClaim"] == {"claimName": "osteoguard-spool"}
    assert env(objects)["OSTEOGUARD_AUDIT_SPOOL_MAX_BYTES"] == "268435456"


def test_service_links_are_off(render: Render) -> None:
    # a Service named "osteoguard" would inject OSTEOGUARD_PORT=tcp://... into the config namespace
    assert server_pod(render())["enableServiceLinks"] is False


def test_platform_assigned_uids_leave_the_fields_out(render: Render) -> None:
    objects = render(SCENARIOS["platform-assigned-uids"])
    assert {"runAsUser", "runAsGroup", "fsGroup"} & set(server_pod(objects)["securityContext"]) == set()
    assert server_pod(objects)["securityContext"]["runAsNonRoot"] is True


def test_helm_test_pod_is_hardened_too(render: Render) -> None:
    pod = only(render(), "Pod")
    (test_container,) = pod["spec"]["containers"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert test_container["securityContext"] == container(render())["securityContext"]


# ---- values -> manifests -----------------------------------------------------------------------
def test_image_defaults_to_the_app_version(render: Render) -> None:
    assert container(render())["image"] == f"osteoguard:{CHART['appVersion']}"


def test_image_repository_and_tag_are_used(render: Render) -> None:
    objects = render({"image": {"repository": "registry.example.org/osteoguard", "tag": "0.2.0"}})
    assert container(objects)["image"] == "registry.example.org/osteoguard:0.2.0"
    assert only(objects, "Pod")["spec"]["containers"][0]["image"] == "registry.example.org/osteoguard:0.2.0"


def test_image_digest_wins_over_the_tag(render: Render) -> None:
    digest = "sha256:" + "ab" * 32
    assert container(render({"image": {"tag": "0.2.0", "digest": digest}}))["image"] == f"osteoguard@{digest}"


def test_container_runs_osteoguard_serve_on_the_server_port(render: Render) -> None:
    main = container(render({"server": {"port": 8080, "workers": 2}}))
    assert main["args"] == ["serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2"]
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_hpa_is_on_by_default_and_owns_the_replica_count(render: Render) -> None:
    objects = render()
    hpa = only(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 70,
    }
    assert "replicas" not in only(objects, "Deployment")["spec"]


def test_hpa_off_gives_a_fixed_replica_count(render: Render) -> None:
    objects = render(SCENARIOS["hpa-off"])
    assert "HorizontalPodAutoscaler" not in kinds(objects)
    assert only(objects, "Deployment")["spec"]["replicas"] == 3


def test_hpa_can_also_target_memory(render: Render) -> None:
    hpa = only(render({"autoscaling": {"targetMemoryUtilizationPercentage": 80}}), "HorizontalPodAutoscaler")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu", "memory"]


def test_configuration_env_comes_from_values(render: Render) -> None:
    variables = env(
        render(
            {
                "logLevel": "debug",
                "fhirTimeoutSeconds": 2.5,
                "snoozeRefreshSeconds": 10,
                "server": {"maxInFlight": 24, "maxLoopLagMs": 80},
                "publicUrl": "https://cds.example.org/",
                "auth": {"corsOrigins": ["https://a.example.org", "https://b.example.org"]},
            }
        )
    )
    assert variables["OSTEOGUARD_AUTH"] == "jwt"
    assert variables["OSTEOGUARD_LOG_LEVEL"] == "debug"
    assert variables["OSTEOGUARD_FHIR_TIMEOUT_S"] == "2.5"
    assert variables["OSTEOGUARD_SNOOZE_REFRESH_S"] == "10"
    assert variables["OSTEOGUARD_MAX_IN_FLIGHT"] == "24"
    assert variables["OSTEOGUARD_MAX_LOOP_LAG_MS"] == "80"
    assert variables["OSTEOGUARD_PUBLIC_URL"] == "https://cds.example.org"
    assert variables["OSTEOGUARD_CORS_ORIGINS"] == "https://a.example.org,https://b.example.org"
    assert variables["OSTEOGUARD_RULES_DIR"] == "/etc/osteoguard/rules"


def test_limits_env_has_the_service_defaults_and_comes_from_values(render: Render) -> None:
    from service.settings import Settings

    defaults = Settings()
    variables = env(render({}))
    assert variables["OSTEOGUARD_MAX_HEADER_BYTES"] == str(defaults.max_header_bytes)
    assert float(variables["OSTEOGUARD_HEADER_TIMEOUT_S"]) == defaults.header_timeout_s
    assert float(variables["OSTEOGUARD_BODY_TIMEOUT_S"]) == defaults.body_timeout_s
    assert variables["OSTEOGUARD_MAX_CONNECTIONS"] == str(defaults.max_connections)
    assert variables["OSTEOGUARD_FHIR_MAX_BYTES"] == str(defaults.fhir_max_bytes)
    limits = {
        "maxHeaderBytes": 65536,
        "headerTimeoutSeconds": 5,
        "bodyTimeoutSeconds": 12.5,
        "maxConnections": 200,
        "fhirMaxBytes": 16777216,
    }
    variables = env(render({"limits": limits}))
    assert [variables[f"OSTEOGUARD_{name}"] for name in ("MAX_HEADER_BYTES", "HEADER_TIMEOUT_S")] == [
        "65536",
        "5",
    ]
    assert variables["OSTEOGUARD_BODY_TIMEOUT_S"] == "12.5"
    assert variables["OSTEOGUARD_MAX_CONNECTIONS"] == "200"
    assert variables["OSTEOGUARD_FHIR_MAX_BYTES"] == "16777216"


def test_auth_is_jwt_by_default_with_the_trusted_clients_file(render: Render) -> None:
    objects = render()
    variables = env(objects)
    assert variables["OSTEOGUARD_AUTH"] == "jwt"
    assert variables["OSTEOGUARD_TRUSTED_CLIENTS"] == "/etc/osteoguard/secrets/trusted-clients.yaml"
    volumes = {v["name"]: v for v in server_pod(objects)["volumes"]}
    assert volumes["secrets"]["secret"]["items"] == [
        {"key": "trusted-clients.yaml", "path": "trusted-clients.yaml"}
    ]
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    assert mounts["secrets"] == {"name": "secrets", "mountPath": "/etc/osteoguard/secrets", "readOnly": True}


def test_trusted_clients_file_has_the_spec_format(render: Render) -> None:
    clients = CI_VALUES["auth"]["trustedClients"]
    data = secret_data(only(render(), "Secret"))
    assert yaml.safe_load(data["trusted-clients.yaml"]) == {"clients": clients}


def test_database_url_comes_from_the_secret(render: Render) -> None:
    objects = render()
    secret = only(objects, "Secret")
    assert env(objects)["OSTEOGUARD_DATABASE_URL"] == {
        "secretKeyRef": {"name": secret["metadata"]["name"], "key": "database-url"}
    }
    assert secret_data(secret)["database-url"] == CI_VALUES["database"]["url"]


def test_existing_secret_is_referenced_and_none_is_created(render: Render) -> None:
    objects = render(
        {
            "secrets": {"existingSecret": "osteoguard-prod", "keys": {"databaseUrl": "DATABASE_URL"}},
            "patientHashKey": {"enabled": True},
        }
    )
    assert "Secret" not in kinds(objects)
    assert env(objects)["OSTEOGUARD_DATABASE_URL"] == {
        "secretKeyRef": {"name": "osteoguard-prod", "key": "DATABASE_URL"}
    }
    volumes = {v["name"]: v for v in server_pod(objects)["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == "osteoguard-prod"
    assert "checksum/secret" not in pod_annotations(objects)


def test_existing_secret_needs_no_database_url_or_clients_in_values(render: Render) -> None:
    # publicUrl is not a secret: it stays in the values.
    objects = render(
        base={"secrets": {"existingSecret": "osteoguard-prod"}, "publicUrl": "https://og.example.org"}
    )
    assert "Deployment" in kinds(objects)


def test_patient_hash_key_is_a_mounted_file(render: Render) -> None:
    objects = render({"patientHashKey": {"enabled": True, "value": "k" * 32}})
    assert env(objects)["OSTEOGUARD_PATIENT_HASH_KEY_FILE"] == "/etc/osteoguard/secrets/patient-hash-key"
    volumes = {v["name"]: v for v in server_pod(objects)["volumes"]}
    assert {"key": "patient-hash-key", "path": "patient-hash-key"} in volumes["secrets"]["secret"]["items"]
    assert secret_data(only(objects, "Secret"))["patient-hash-key"] == "k" * 32


def test_no_patient_hash_key_by_default(render: Render) -> None:
    objects = render()
    assert "OSTEOGUARD_PATIENT_HASH_KEY_FILE" not in env(objects)
    assert "patient-hash-key" not in secret_data(only(objects, "Secret"))


def test_secret_change_rolls_the_pods(render: Render) -> None:
    def annotation(url: str) -> str:
        return pod_annotations(render({"database": {"url": url}}))["checksum/secret"]

    assert annotation("postgresql://a@db/og") != annotation("postgresql://b@db/og")


def test_auth_off_acknowledged_renders_without_trusted_clients(render: Render) -> None:
    objects = render(SCENARIOS["auth-off-acknowledged"])
    variables = env(objects)
    assert variables["OSTEOGUARD_AUTH"] == "off"
    assert "OSTEOGUARD_TRUSTED_CLIENTS" not in variables
    assert "trusted-clients.yaml" not in secret_data(only(objects, "Secret"))
    assert "secrets" not in {v["name"] for v in server_pod(objects)["volumes"]}


def test_auth_off_notes_carry_a_warning() -> None:
    text = notes(merge(CI_VALUES, SCENARIOS["auth-off-acknowledged"]))
    assert "WARNING: auth.mode=off" in text


def test_sqlite_on_a_single_pod_renders(render: Render) -> None:
    objects = render(
        {
            "database": {"url": "sqlite:////var/lib/osteoguard/osteoguard.db"},
            "autoscaling": {"enabled": False},
            "replicaCount": 1,
        }
    )
    assert only(objects, "Deployment")["spec"]["replicas"] == 1


def test_ingress_routes_to_the_service_with_tls(render: Render) -> None:
    objects = render(SCENARIOS["ingress-on"])
    ingress = only(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["osteoguard.example.org"], "secretName": "osteoguard-tls"}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "osteoguard.example.org"
    (path,) = rule["http"]["paths"]
    assert path["backend"] == {"service": {"name": FULLNAME, "port": {"name": "http"}}}


def test_public_url_is_derived_from_the_tls_ingress_host(render: Render) -> None:
    values = merge(SCENARIOS["ingress-on"], {"publicUrl": ""})
    assert env(render(values))["OSTEOGUARD_PUBLIC_URL"] == "https://osteoguard.example.org"


def test_public_url_comes_from_the_values(render: Render) -> None:
    assert env(render())["OSTEOGUARD_PUBLIC_URL"] == "https://osteoguard.example.org"


def test_jwt_without_a_public_url_or_ingress_refuses_to_render(render: Render) -> None:
    # The service refuses to start in jwt mode without OSTEOGUARD_PUBLIC_URL (the audience).
    with pytest.raises(helm.HelmRenderError, match="auth.mode=jwt needs publicUrl"):
        render({"publicUrl": ""})


def test_public_url_is_left_out_with_auth_off_and_no_ingress(render: Render) -> None:
    values = merge(SCENARIOS["auth-off-acknowledged"], {"publicUrl": ""})
    assert "OSTEOGUARD_PUBLIC_URL" not in env(render(values))


def test_service_targets_the_named_http_port(render: Render) -> None:
    objects = render()
    service = only(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_helm_test_pod_is_not_behind_the_service(render: Render) -> None:
    objects = render()
    selector = only(objects, "Service")["spec"]["selector"]
    assert not selector.items() <= only(objects, "Pod")["metadata"]["labels"].items()


def test_probes_use_healthz_and_readyz(render: Render) -> None:
    main = container(render())
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_resources_are_set(render: Render) -> None:
    resources = container(render())["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_shutdown_gives_in_flight_requests_their_20_seconds(render: Render) -> None:
    objects = render()
    grace = server_pod(objects)["terminationGracePeriodSeconds"]
    pre_stop = container(objects)["lifecycle"]["preStop"]["sleep"]["seconds"]
    # `osteoguard serve` gives in-flight requests 20 s after SIGTERM (timeout_graceful_shutdown)
    assert grace >= pre_stop + 20


def test_pods_spread_over_zones_and_nodes(render: Render) -> None:
    objects = render()
    constraints = server_pod(objects)["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    selector = only(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert all(c["labelSelector"]["matchLabels"] == selector for c in constraints)


def test_pdb_keeps_pods_through_a_drain(render: Render) -> None:
    objects = render()
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == only(objects, "Deployment")["spec"]["selector"]


def test_pdb_min_available_replaces_max_unavailable(render: Render) -> None:
    pdb = only(
        render({"podDisruptionBudget": {"minAvailable": "50%", "maxUnavailable": None}}),
        "PodDisruptionBudget",
    )
    assert pdb["spec"] == {"minAvailable": "50%", "selector": pdb["spec"]["selector"]}


def test_network_policy_admits_only_the_http_port(render: Render) -> None:
    policy = only(render(), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
    egress_ports = sorted(
        (p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]
    )
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (5432, "TCP")]


def test_restricted_network_policy_still_admits_the_helm_test_pod(render: Render) -> None:
    objects = render(SCENARIOS["everything-on"])
    (rule,) = only(objects, "NetworkPolicy")["spec"]["ingress"]
    test_labels = only(objects, "Pod")["metadata"]["labels"]
    selectors = [peer["podSelector"]["matchLabels"] for peer in rule["from"] if "podSelector" in peer]
    assert any(s.items() <= test_labels.items() for s in selectors)
    assert {"namespaceSelector": {"matchLabels": {"name": "ingress-nginx"}}} in rule["from"]


def test_extra_env_is_appended(render: Render) -> None:
    assert env(render(SCENARIOS["everything-on"]))["HTTPS_PROXY"] == "http://proxy:3128"


# ---- the rule set ------------------------------------------------------------------------------
def repository_rule_files() -> dict[str, bytes]:
    root = REPO / "rules"
    paths = [root / "ruleset.yaml", *sorted(root.glob("classes/*.yaml")), *sorted(root.glob("*/*/rule.yaml"))]
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in paths}


def chart_rule_files(chart_dir: Path = CHART_DIR) -> dict[str, bytes]:
    root = chart_dir / "files" / "rules"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mounted_rules(objects: list[Manifest]) -> dict[str, str]:
    """The rules volume as the kubelet lays it out: path -> content."""
    volume = next(v for v in server_pod(objects)["volumes"] if v["name"] == "rules")
    data = only(objects, "ConfigMap")["data"]
    return {item["path"]: data[item["key"]] for item in volume["configMap"]["items"]}


def test_chart_rules_copy_matches_the_repository() -> None:
    assert chart_rule_files() == repository_rule_files(), (
        "the chart's rules are stale; run: osteoguard rules export-chart"
    )


def test_rules_volume_has_the_repository_layout(render: Render) -> None:
    objects = render()
    assert set(mounted_rules(objects)) == set(repository_rule_files())
    mount = next(m for m in container(objects)["volumeMounts"] if m["name"] == "rules")
    assert mount == {"name": "rules", "mountPath": env(objects)["OSTEOGUARD_RULES_DIR"], "readOnly": True}


def test_configmap_keys_are_flattened_paths(render: Render) -> None:
    keys = set(only(render(), "ConfigMap")["data"])
    assert "monitoring__baseline-dexa__rule.yaml" in keys and "ruleset.yaml" in keys
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", k) for k in keys)


def test_mounted_rules_load_with_the_services_own_loader(render: Render, tmp_path: Path) -> None:
    for path, content in mounted_rules(render()).items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    mounted, packaged = load_ruleset(tmp_path), load_ruleset(PACKAGED_RULES_DIR)
    assert (mounted.name, mounted.version) == (packaged.name, packaged.version)
    assert sorted(r.id for r in mounted.rules) == sorted(r.id for r in packaged.rules)


def test_mounted_rule_files_are_byte_for_byte(render: Render) -> None:
    mounted = mounted_rules(render())
    assert {p: c.encode() for p, c in mounted.items()} == repository_rule_files()


def test_rules_checksum_is_stable(render: Render) -> None:
    def checksum() -> str:
        return pod_annotations(render())["checksum/rules"]

    assert checksum() == checksum()
    assert re.fullmatch(r"[0-9a-f]{64}", checksum())


def test_a_changed_rule_rolls_the_pods(render: Render, tmp_path: Path) -> None:
    chart = tmp_path / "osteoguard"
    shutil.copytree(CHART_DIR, chart)
    rule = chart / "files" / "rules" / "monitoring" / "vitamin-d" / "rule.yaml"
    before = pod_annotations(render(chart_dir=chart))["checksum/rules"]
    rule.write_text(rule.read_text(encoding="utf-8").replace("window_days: 365", "window_days: 300"), "utf-8")
    assert pod_annotations(render(chart_dir=chart))["checksum/rules"] != before


def test_a_new_rule_folder_is_mounted(render: Render, tmp_path: Path) -> None:
    chart = tmp_path / "osteoguard"
    shutil.copytree(CHART_DIR, chart)
    new_rule = chart / "files" / "rules" / "monitoring" / "calcium" / "rule.yaml"
    new_rule.parent.mkdir()
    new_rule.write_text("title: calcium\n", encoding="utf-8")
    mounted = mounted_rules(render(chart_dir=chart))
    assert mounted["monitoring/calcium/rule.yaml"] == "title: calcium\n"


def test_existing_configmap_replaces_the_chart_copy(render: Render) -> None:
    objects = render(SCENARIOS["custom-rules"])
    assert "ConfigMap" not in kinds(objects)
    volume = next(v for v in server_pod(objects)["volumes"] if v["name"] == "rules")
    assert volume["configMap"]["name"] == "clinical-rules"
    paths = {i["path"] for i in volume["configMap"]["items"]}
    assert paths == set(repository_rule_files())
    assert pod_annotations(objects)["checksum/rules"] == "sha256:abc"


def test_existing_configmap_lists_its_own_rules(render: Render) -> None:
    objects = render(
        {"rules": {"existingConfigMap": "clinical-rules", "existingConfigMapRules": ["monitoring/calcium"]}}
    )
    volume = next(v for v in server_pod(objects)["volumes"] if v["name"] == "rules")
    classes = [
        {"key": f"classes__{name}.yaml", "path": f"classes/{name}.yaml"}
        for name in ("anastrozole", "bone-agent", "testosterone")
    ]
    assert volume["configMap"]["items"] == [
        {"key": "ruleset.yaml", "path": "ruleset.yaml"},
        *classes,
        {"key": "monitoring__calcium__rule.yaml", "path": "monitoring/calcium/rule.yaml"},
    ]


def test_rules_configmap_stays_far_below_the_1_mib_limit(render: Render) -> None:
    data = only(render(), "ConfigMap")["data"]
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    assert size < 256 * 1024, size


# ---- the helm test hook, run against a stand-in server ----------------------------------------
class _Answers(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        status, headers, body = self.answers.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def stand_in(answers: dict[str, tuple[int, dict[str, str], bytes]]) -> Iterator[str]:
    handler = type("Answers", (_Answers,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_helm_test(objects: list[Manifest], url: str) -> subprocess.CompletedProcess[str]:
    """The helm test pod's command, with its env, pointed at ``url``."""
    (test_container,) = only(objects, "Pod")["spec"]["containers"]
    command = test_container["command"]
    assert command[:2] == ["python", "-c"]
    pod_env = {e["name"]: e["value"] for e in test_container["env"]} | {"OSTEOGUARD_URL": url}
    return subprocess.run(
        [sys.executable, "-c", command[2]],
        env={"PATH": os.environ.get("PATH", ""), **pod_env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


HEALTHY = {"/healthz": (200, {}, b'{"status":"ok"}'), "/readyz": (200, {}, b'{"status":"ready"}')}
DISCOVERY = json.dumps({"services": [{"id": "anastrozole-bone-order-sign", "hook": "order-sign"}]}).encode()


def test_helm_test_hook_annotations(render: Render) -> None:
    annotations = only(render(), "Pod")["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"


def test_helm_test_calls_the_release_service(render: Render) -> None:
    (test_container,) = only(render(), "Pod")["spec"]["containers"]
    assert {"name": "OSTEOGUARD_URL", "value": f"http://{FULLNAME}:80"} in test_container["env"]


def test_helm_test_passes_when_jwt_discovery_refuses_an_anonymous_caller(render: Render) -> None:
    # header names in lower case, as uvicorn sends them
    answers = HEALTHY | {"/cds-services": (401, {"www-authenticate": "Bearer"}, b"{}")}
    with stand_in(answers) as url:
        result = run_helm_test(render(), url)
    assert result.returncode == 0, result.stderr


def test_helm_test_fails_when_jwt_discovery_answers_without_a_token(render: Render) -> None:
    with stand_in(HEALTHY | {"/cds-services": (200, {}, DISCOVERY)}) as url:
        result = run_helm_test(render(), url)
    assert result.returncode != 0 and "FAIL" in result.stderr


def test_helm_test_passes_with_the_services_listed_when_auth_is_off(render: Render) -> None:
    with stand_in(HEALTHY | {"/cds-services": (200, {}, DISCOVERY)}) as url:
        result = run_helm_test(render(SCENARIOS["auth-off-acknowledged"]), url)
    assert result.returncode == 0, result.stderr
    assert "anastrozole-bone-order-sign" in result.stdout


def test_helm_test_fails_when_the_service_is_not_ready(render: Render) -> None:
    answers = HEALTHY | {
        "/readyz": (503, {}, b"{}"),
        "/cds-services": (401, {"www-authenticate": "Bearer"}, b""),
    }
    with stand_in(answers) as url:
        result = run_helm_test(render(), url)
    assert result.returncode != 0 and "/readyz" in result.stderr


# ---- the rendered pod, started as a process ---------------------------------------------------
# The Deployment's own env, args and volumes, laid out under a temporary root (each mountPath
# becomes root/<mountPath>), run with this venv's `osteoguard`. It proves the wiring: the
# variables the service reads, the rules tree it loads, the secret files it opens.
POD_VALUES = {
    # one pod on SQLite, so no database server is needed; in the data volume, like the image
    "database": {"url": "sqlite:////var/lib/osteoguard/osteoguard.db"},
    "autoscaling": {"enabled": False},
    "replicaCount": 1,
    "patientHashKey": {"enabled": True, "value": "0123456789abcdef0123456789abcdef"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lay_out_pod(objects: list[Manifest], root: Path) -> dict[str, str]:
    """Write the pod's volumes under ``root``; return its env with paths moved under ``root``."""
    main = container(objects)
    volumes = {v["name"]: v for v in server_pod(objects)["volumes"]}
    configmap = only(objects, "ConfigMap")["data"]
    secret = secret_data(only(objects, "Secret"))
    mounts = sorted(main["volumeMounts"], key=lambda m: -len(m["mountPath"]))
    for mount in mounts:
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        source = volume.get("configMap") or volume.get("secret")
        data = configmap if "configMap" in volume else secret
        for item in (source or {}).get("items", []):
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[item["key"]], encoding="utf-8")

    # one pass, longest mount path first, so a moved path is never moved again
    pattern = re.compile("|".join(re.escape(m["mountPath"]) + "(?=/|$)" for m in mounts))

    def moved(value: str) -> str:
        return pattern.sub(lambda match: str(root / match.group(0).lstrip("/")), value)

    variables = {}
    for entry in main["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            variables[entry["name"]] = moved(secret[ref["key"]])
        else:
            variables[entry["name"]] = moved(entry["value"])
    return variables


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, list[Manifest]]]:
    objects = render_chart(CHART_DIR, merge(CI_VALUES, POD_VALUES))
    root = tmp_path_factory.mktemp("pod")
    variables = lay_out_pod(objects, root)
    workdir = root / "var" / "lib" / "osteoguard"  # the image's WORKDIR and HOME
    port = free_port()
    moved_args = {"0.0.0.0": "127.0.0.1", "8000": str(port)}  # loopback only, on a free port
    args = [moved_args.get(a, a) for a in container(objects)["args"]]
    log = root / "pod.log"
    with log.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("osteoguard")), *args],
            env={
                "PATH": os.environ.get("PATH", ""),
                "HOME": str(workdir),
                "TMPDIR": str(root / "tmp"),
                "PYTHONDONTWRITEBYTECODE": "1",
                **variables,
            },
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        startup = container(objects)["startupProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text(encoding="utf-8")
            try:
                if httpx.get(url + startup, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the pod did not start within 30 s"
            time.sleep(0.1)
        yield url, root, objects
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_pod_answers_its_probes(pod: tuple[str, Path, list[Manifest]]) -> None:
    url, _, objects = pod
    main = container(objects)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert httpx.get(url + main[probe]["httpGet"]["path"], timeout=5).status_code == 200, probe


def test_pod_loads_the_mounted_rule_set(pod: tuple[str, Path, list[Manifest]]) -> None:
    url, _, _ = pod
    ready = httpx.get(url + "/readyz", timeout=5).json()
    packaged = load_ruleset(PACKAGED_RULES_DIR)
    assert (ready["ruleset"], ready["version"]) == (packaged.name, packaged.version)


def test_pod_refuses_an_anonymous_cds_call(pod: tuple[str, Path, list[Manifest]]) -> None:
    url, _, _ = pod
    response = httpx.get(url + "/cds-services", timeout=5)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_helm_test_passes_against_the_pod(pod: tuple[str, Path, list[Manifest]]) -> None:
    url, _, objects = pod
    result = run_helm_test(objects, url)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pod_keeps_its_store_in_the_data_volume(pod: tuple[str, Path, list[Manifest]]) -> None:
    _, root, _ = pod
    assert (root / "var" / "lib" / "osteoguard" / "osteoguard.db").is_file()
