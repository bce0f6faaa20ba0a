"""deploy/k8s: both overlays render, validate strictly, and keep the promises of DESIGN.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
KUBERNETES_VERSION = "1.32.0"
BUILT_IN = {"ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service", "PodDisruptionBudget"}
CUSTOM = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
}
ARGS = [
    "run", "--bootstrap-servers", "$(KAFKA_BOOTSTRAP)", "--topic", "$(STREAMGUARD_SERVICE_TOPIC)",
    "--state-dir", "/var/lib/streamguard", "--metrics-port", "9108",
]

yaml = pytest.importorskip("yaml", reason="PyYAML missing: run scripts/install-ops-tools.sh .venv")


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request, which) -> tuple[str, str, dict[str, dict]]:
    """(overlay name, rendered YAML, {kind: object}) of one overlay."""
    kubectl = which("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / request.param)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), f"one object per kind expected, got {kinds}"
    return request.param, result.stdout, {d["kind"]: d for d in docs}


def container(objects: dict[str, dict]) -> dict:
    (c,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def test_renders_the_expected_kinds(overlay) -> None:
    _, _, objects = overlay
    assert set(objects) == BUILT_IN | set(CUSTOM)


def test_built_in_kinds_validate_strictly(overlay, which, tmp_path: Path) -> None:
    name, text, objects = overlay
    rendered = tmp_path / f"{name}.yaml"
    rendered.write_text(text)
    result = subprocess.run(
        [which("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(rendered)],
        capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for kind in BUILT_IN:
        assert f"passed for resource {kind.lower()}/" in output, f"{kind} not validated:\n{output}"
    # Custom resources have no schema there: they may only warn, and are checked below.
    for line in output.splitlines():
        if line.startswith("WARN"):
            assert any(f"kind {kind} with api version {api}" in line for kind, api in CUSTOM.items()), line


def test_strict_validation_would_catch_a_typo(overlay) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    _, _, objects = overlay
    broken = yaml.safe_load(yaml.safe_dump(objects["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # wrong case
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_pod_is_locked_down(overlay) -> None:
    _, _, objects = overlay
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == objects["ServiceAccount"]["metadata"]["name"]
    sc = container(objects)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"


def test_container_command_probes_and_lifecycle(overlay) -> None:
    _, _, objects = overlay
    c = container(objects)
    assert c["name"] == "streamguard"
    assert c["args"] == ARGS
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9108}
    probes = {kind: c[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert all(p["port"] in ("metrics", 9108) for p in probes.values())
    assert c["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= c["resources"][kind].keys()
    assert "replicas" not in objects["Deployment"]["spec"], "KEDA owns the replica count"


def test_environment_comes_from_the_configmap_and_secrets(overlay) -> None:
    _, _, objects = overlay
    c = container(objects)
    (env_from,) = c["envFrom"]
    assert env_from["configMapRef"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert set(secret_refs) == {"STREAMGUARD_HMAC_KEY", "STREAMGUARD_KAFKA_SASL_USERNAME", "STREAMGUARD_KAFKA_SASL_PASSWORD"}
    assert all(not e.get("value") for e in c["env"]), "no literal values beside the ConfigMap"
    data = objects["ConfigMap"]["data"]
    for variable in ("KAFKA_BOOTSTRAP", "STREAMGUARD_SERVICE_TOPIC", "STREAMGUARD_SERVICE_GROUP_ID", "STREAMGUARD_SERVICE_PARTITIONS_HINT"):
        assert data.get(variable), variable
    assert not any("PASSWORD" in k or "HMAC" in k for k in data), "secrets do not belong in the ConfigMap"


def test_metrics_endpoint_listens_where_probes_and_prometheus_connect(overlay, monkeypatch) -> None:
    """streamguard binds loopback by default; the pod must say 0.0.0.0 (or ::), or the probes fail."""
    from streamguard.cli import build_parser
    from streamguard.service.command import resolve_settings

    _, _, objects = overlay
    assert resolve_settings(build_parser().parse_args(["run"]), environ={}).metrics.addr == "127.0.0.1"
    addr = objects["ConfigMap"]["data"].get("STREAMGUARD_METRICS_ADDR")
    assert addr in ("0.0.0.0", "::"), f"STREAMGUARD_METRICS_ADDR={addr!r}: the kubelet connects to the pod IP"
    args = build_parser().parse_args(["run"])
    resolve_settings(args, environ={"STREAMGUARD_METRICS_ADDR": addr})
    assert args.metrics_addr == addr


def test_configmap_settings_are_known_to_streamguard(overlay) -> None:
    from streamguard.config import load_settings

    _, _, objects = overlay
    env = dict(objects["ConfigMap"]["data"])
    env.update({e["name"]: "x" for e in container(objects)["env"]})
    load_settings(environ=env)  # raises on a STREAMGUARD_<SECTION>_<FIELD> that is not a setting


def test_volumes_state_pvc_tmp_and_kafka_ca(overlay) -> None:
    _, _, objects = overlay
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    state = volumes[mounts["/var/lib/streamguard"]]
    assert state["persistentVolumeClaim"]["claimName"] == objects["PersistentVolumeClaim"]["metadata"]["name"] == "streamguard-state"
    assert objects["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    ca = volumes[mounts["/etc/streamguard/kafka-ca"]]
    assert ca["secret"]["secretName"] == "streamguard-kafka-ca"
    assert objects["ConfigMap"]["data"]["STREAMGUARD_KAFKA_SSL_CAFILE"].startswith("/etc/streamguard/kafka-ca/")


def test_gpu_only_in_the_gpu_overlay(overlay) -> None:
    name, _, objects = overlay
    c = container(objects)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    backend = objects["ConfigMap"]["data"]["STREAMGUARD_RUNTIME_BACKEND"]
    image = c["image"]
    if name == "gpu":
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"]
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert backend == "cuda"
        assert image == "streamguard:0.1.0-cuda"
        assert objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    else:
        assert "nvidia.com/gpu" not in c["resources"].get("limits", {})
        assert "nvidia.com/gpu" not in c["resources"].get("requests", {})
        assert "nodeSelector" not in pod and "tolerations" not in pod
        assert backend == "cpu"
        assert image == "streamguard:0.1.0"
        assert int(c["resources"]["limits"]["cpu"]) >= 4


def test_service_and_servicemonitor_reach_the_metrics_port(overlay) -> None:
    _, _, objects = overlay
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = objects["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 9108 and port["targetPort"] in ("metrics", 9108)
    monitor = objects["ServiceMonitor"]
    assert monitor["apiVersion"] == CUSTOM["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint.get("path", "/metrics") == "/metrics"
    # The rules select job="streamguard": the job label comes from the Service label named by jobLabel.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "streamguard"
    pdb = objects["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_prometheusrule_equals_rules_yml(overlay) -> None:
    _, _, objects = overlay
    rule = objects["PrometheusRule"]
    assert rule["apiVersion"] == CUSTOM["PrometheusRule"]
    source = yaml.safe_load((REPO / "deploy" / "prometheus" / "rules.yml").read_text())
    assert rule["spec"]["groups"] == source["groups"], (
        "deploy/k8s/base/prometheusrule.yaml is stale: run python deploy/prometheus/sync_prometheusrule.py"
    )
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert r["alert"] and r["expr"]


def test_prometheusrule_copy_is_current() -> None:
    script = REPO / "deploy" / "prometheus" / "sync_prometheusrule.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_scaledobject_never_exceeds_the_partitions(overlay) -> None:
    _, _, objects = overlay
    scaled = objects["ScaledObject"]
    assert scaled["apiVersion"] == CUSTOM["ScaledObject"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    partitions = int(objects["ConfigMap"]["data"]["STREAMGUARD_SERVICE_PARTITIONS_HINT"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    env_names = set(objects["ConfigMap"]["data"])
    for key in ("bootstrapServers", "topic", "consumerGroup"):
        assert meta.get(key) or meta.get(f"{key}FromEnv") in env_names, key
    assert meta.get("allowIdleConsumers", "false") == "false"
    assert int(meta["lagThreshold"]) > 0
    auth = objects["TriggerAuthentication"]
    assert auth["apiVersion"] == CUSTOM["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert {"username", "password", "ca"} <= params.keys()
    assert all(ref["name"] and ref["key"] for ref in params.values())


def test_every_streamguard_variable_of_the_pod_is_read_by_the_code(overlay) -> None:
    """A STREAMGUARD_* name in the ConfigMap or the Deployment is a setting (new name) or the HMAC key.

    Settings (STREAMGUARD_<SECTION>_<FIELD>, Kafka security and ``run``'s service options included)
    must load and change what ``streamguard run`` resolves; a misspelt variable
    (e.g. STREAMGUARD_STATE_DIR for STREAMGUARD_SERVICE_STATE_DIR) or an old name fails here
    instead of being silently ignored, or warned about, in the cluster.
    """
    from streamguard.cli import build_parser
    from streamguard.config import LEGACY_ENV, load_settings, settings_reference, unknown_env_names
    from streamguard.pseudonyms import hmac_key_from_env
    from streamguard.service.command import resolve_settings

    _, _, objects = overlay
    env = dict(objects["ConfigMap"]["data"])
    env.update({e["name"]: f"secret-{e['name'].lower()}" for e in container(objects)["env"]})
    ours = {k: v for k, v in env.items() if k.startswith("STREAMGUARD_")}
    assert not unknown_env_names(ours), unknown_env_names(ours)
    assert not set(ours) & set(LEGACY_ENV), "the manifests use the new names"
    settings = load_settings(environ={k: v for k, v in ours.items() if k != "STREAMGUARD_HMAC_KEY"})
    assert settings.kafka.security_protocol == env["STREAMGUARD_KAFKA_SECURITY_PROTOCOL"]
    assert settings.kafka.sasl_password == "secret-streamguard_kafka_sasl_password"
    assert hmac_key_from_env(env) == (b"secret-streamguard_hmac_key", True)
    where = {row["env"]: row["setting"] for row in settings_reference()}
    service = {k: v for k, v in ours.items() if k.startswith(("STREAMGUARD_SERVICE_", "STREAMGUARD_RUNTIME_", "STREAMGUARD_METRICS_"))}
    assert service, "expected run's options (topic, group...) in the ConfigMap"
    baseline = resolve_settings(build_parser().parse_args(["run"]), environ={})
    for name, raw in service.items():
        section, field = where[name].split(".")
        resolved = resolve_settings(build_parser().parse_args(["run"]), environ={name: raw})
        value = getattr(getattr(resolved, section), field)
        assert str(value).lower() == raw.lower(), (name, value)
        assert value != getattr(getattr(baseline, section), field) or raw in ("streamguard", "auto"), name
