"""The Helm chart, linted and rendered with the real Helm SDK, every core manifest checked
against Kubernetes' own schemas, and the production properties asserted."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is a test dependency")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = Path(__file__).resolve().parents[1] / "helm" / "pachca-alert-bridge"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ("1.29.0", "1.30.0", "1.31.0")
CRDS = {"ServiceMonitor", "PrometheusRule"}  # not in Kubernetes' schemas


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="bridge", namespace="monitoring")
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def ci_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def test_chart_lints_strictly_clean() -> None:
    report = helm.lint(str(CHART), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    for path in CI_VALUES:
        report = helm.lint(str(CHART), ci_values(path), strict=True)
        assert report["errors"] == [], path.name


@pytest.mark.parametrize(
    "values_file", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults"
)
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_core_manifest_is_valid_kubernetes(values_file: Path | None, kube: str) -> None:
    docs = render(ci_values(values_file) if values_file else {})
    assert docs
    for doc in docs:
        if doc["kind"] in CRDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(doc, kube, strict=True)


def test_defaults_are_one_replica_on_sqlite_with_a_pvc() -> None:
    docs = render({})
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (pvc,) = by_kind(docs, "PersistentVolumeClaim")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BRIDGE_STORE"]["value"] == "sqlite:////var/lib/pachca-alert-bridge/state.db"
    assert by_kind(docs, "PodDisruptionBudget") == []


def test_production_security_and_probes() -> None:
    (deployment,) = by_kind(render({}), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # writable only where the SQLite file lives, and /tmp
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/pachca-alert-bridge", "/tmp"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"]["memory"]
    assert container["resources"]["requests"]["cpu"]


def test_secrets_reach_the_bridge_as_optional_secret_refs() -> None:
    docs = render({"secrets": {"pachcaToken": "t0k", "webhookToken": "in"}})
    (secret,) = by_kind(docs, "Secret")
    assert secret["stringData"]["pachca-token"] == "t0k"
    (deployment,) = by_kind(docs, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["PACHCA_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "pachca-token", "optional": True}
    assert "value" not in env["PACHCA_TOKEN"]  # never inlined in the pod spec


def test_existing_secret_is_used_and_none_created() -> None:
    docs = render({"secrets": {"create": False, "existingSecret": "mine"}})
    assert by_kind(docs, "Secret") == []
    (deployment,) = by_kind(docs, "Deployment")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in env if "valueFrom" in e}
    assert refs == {"mine"}


def test_rules_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        (deployment,) = by_kind(render(values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/rules"])

    other = {"rules": {"routes": [{"name": "default", "chat_id": 2000}]}}
    assert checksum({}) != checksum(other)


def test_rules_configmap_is_what_check_config_accepts(tmp_path: Path) -> None:
    from bridge.rules import load_rules

    docs = render(ci_values(CHART / "ci" / "ha-values.yaml"))
    (config,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-rules")]
    (tmp_path / "rules.yaml").write_text(config["data"]["rules.yaml"])
    assert [r.name for r in load_rules(tmp_path).routes] == ["databases", "default"]


def test_ha_mode_redis_rolling_update_pdb_and_extras() -> None:
    docs = render(ci_values(CHART / "ci" / "ha-values.yaml"))
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BRIDGE_STORE"]["value"] == "redis://redis-master.redis:6379/0"
    assert by_kind(docs, "PersistentVolumeClaim") == []
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (ingress,) = by_kind(docs, "Ingress")
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/pachca/webhook"]  # intake and metrics stay in the cluster
    (rule,) = by_kind(docs, "PrometheusRule")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "PachcaBridgeOutboxGrowing",
        "PachcaBridgeDeliveriesFailing",
        "PachcaBridgeCallbacksRejected",
        "PachcaBridgeRateLimited",
        "PachcaBridgeTokenRefused",
        "PachcaBridgeLoopStalled",
        "PachcaBridgeLoopRestarting",
    } <= alerts
    exported = exported_metric_names()
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            for name in re.findall(r"\bbridge_\w+", alert["expr"]):
                assert name in exported, f"{alert['alert']} uses {name}, which nothing exports"
    assert by_kind(docs, "ServiceMonitor")
    assert by_kind(docs, "NetworkPolicy")
    dashboards = [c for c in by_kind(docs, "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    (dashboard,) = dashboards
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = json.loads(dashboard["data"]["pachca-alert-bridge.json"])["panels"]
    assert any("bridge_outbox_depth" in p["targets"][0]["expr"] for p in panels)


def exported_metric_names() -> set[str]:
    """Every series name the bridge's metrics can have (counters with `_total`, histograms
    with their `_bucket`/`_sum`/`_count`)."""
    from bridge.metrics import Metrics

    names = set()
    for metric in Metrics().registry.collect():
        names.add(metric.name)
        names.update(f"{metric.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count"))
    return names


def test_several_replicas_with_sqlite_are_refused_with_a_reason() -> None:
    with pytest.raises(
        helm.HelmRenderError, match=re.escape("replicaCount > 1 needs store.type=redis")
    ):
        render({"replicaCount": 2})


def test_redis_without_a_url_is_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape("store.redis.url is required")):
        render({"store": {"type": "redis"}})


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"replicas": 2}, "additional properties 'replicas'"),
        ({"store": {"type": "postgres"}}, "/store/type"),
        ({"pachca": {"rateLimit": 500}}, "/pachca/rateLimit"),
        ({"ingress": {"enabled": "yes"}}, "/ingress/enabled"),
        ({"secrets": {"webhookBasicAuth": "nocolon"}}, "/secrets/webhookBasicAuth"),
        ({"rules": {"routes": [{"name": "x"}]}}, "chat_id"),
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(values: dict[str, Any], where: str) -> None:
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.validate_schema(values)


def test_notes_tell_the_receiver_and_callback_urls() -> None:
    chart = helm.Chart.load(str(CHART))
    notes = chart.render(
        ci_values(CHART / "ci" / "ha-values.yaml"), name="bridge", namespace="monitoring"
    )["pachca-alert-bridge/templates/NOTES.txt"]
    assert "http://bridge-pachca-alert-bridge.monitoring.svc:8080/webhook/alertmanager" in notes
    assert "https://alerts-bridge.example.com/pachca/webhook" in notes


def test_chart_readme_lists_every_documented_value() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("values_table", CHART.parent / "values_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (CHART / "README.md").read_text() == module.updated_readme(), (
        "run python3 helm/values_table.py"
    )
