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


IMAGE = {"image": {"repository": "registry.example.com/pachca-alert-bridge"}}


def with_image(values: dict[str, Any]) -> dict[str, Any]:
    """`values` plus the one value the chart cannot default: where the image was pushed."""
    return {**values, "image": {**IMAGE["image"], **values.get("image", {})}}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(with_image(values), name="bridge", namespace="monitoring")
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
    report = helm.lint(str(CHART), IMAGE, strict=True)
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
    (deployment,) = by_kind(docs, "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("registry.example.com/pachca-alert-bridge:")
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


def test_the_pace_ceiling_reaches_the_bridge_only_when_set() -> None:
    def env(values: dict[str, Any]) -> dict[str, Any]:
        (deployment,) = by_kind(render(values), "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e for e in container["env"]}

    assert "PACHCA_RATE_MAX" not in env({})  # the bridge's default: 1.5 x rateLimit, at most 50
    assert env({"pachca": {"rateMax": 40}})["PACHCA_RATE_MAX"]["value"] == "40"


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
        ({"pachca": {"rateMax": "fast"}}, "/pachca/rateMax"),
        ({"ingress": {"enabled": "yes"}}, "/ingress/enabled"),
        ({"secrets": {"webhookBasicAuth": "nocolon"}}, "/secrets/webhookBasicAuth"),
        ({"rules": {"routes": [{"name": "x"}]}}, "chat_id"),
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(values: dict[str, Any], where: str) -> None:
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmValuesError, match=re.escape(where)):
        chart.validate_schema(values)


def render_notes(values: dict[str, Any]) -> str:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(with_image(values), name="bridge", namespace="monitoring")
    return str(out["pachca-alert-bridge/templates/NOTES.txt"])


def test_notes_tell_the_receiver_and_callback_urls() -> None:
    notes = render_notes(ci_values(CHART / "ci" / "ha-values.yaml"))
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


def test_an_install_without_an_image_is_refused_not_pulled_from_a_placeholder() -> None:
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmError, match=re.escape("image.repository is required")):
        chart.render({}, name="bridge", namespace="monitoring")
    readme = (CHART / "README.md").read_text()
    assert "ghcr.io/example" not in readme
    assert "--set image.repository=" in readme


def network_policy_sources(values: dict[str, Any]) -> list[dict[str, Any]]:
    (policy,) = by_kind(render(values), "NetworkPolicy")
    (rule,) = policy["spec"]["ingress"]
    return list(rule["from"])


def test_network_policy_admits_the_ingress_controller_whenever_the_ingress_is_on() -> None:
    sources = network_policy_sources(ci_values(CHART / "ci" / "ha-values.yaml"))
    namespaces = [
        s["namespaceSelector"]["matchLabels"] for s in sources if "namespaceSelector" in s
    ]
    assert {"kubernetes.io/metadata.name": "monitoring"} in namespaces
    assert {"kubernetes.io/metadata.name": "ingress-nginx"} in namespaces
    own = {"networkPolicy": {"enabled": True, "ingressNamespaceLabels": [{"team": "edge"}]}}
    sources = network_policy_sources({**own, "ingress": {"enabled": True, "host": "b.example"}})
    assert {"namespaceSelector": {"matchLabels": {"team": "edge"}}} in sources
    # no ingress: nothing outside is admitted for it
    sources = network_policy_sources({"networkPolicy": {"enabled": True}})
    assert all(
        s.get("namespaceSelector", {}).get("matchLabels")
        != {"kubernetes.io/metadata.name": "ingress-nginx"}
        for s in sources
    )
    with pytest.raises(helm.HelmRenderError, match="ingressNamespaceLabels is empty"):
        render(
            {
                "networkPolicy": {"enabled": True, "ingressNamespaceLabels": []},
                "ingress": {"enabled": True, "host": "b.example"},
            }
        )


def prometheus_rules(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    base = {"prometheusRule": {"enabled": True}}
    (rule,) = by_kind(render({**base, **(values or {})}), "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def test_rules_catch_a_pod_that_never_starts_and_are_marked_for_another_receiver() -> None:
    rules = prometheus_rules({"prometheusRule": {"enabled": True, "alertLabels": {"to": "mail"}}})
    (absent,) = [r for r in rules if r["alert"] == "PachcaBridgeAbsent"]
    assert absent["expr"] == (
        'absent(up{job="bridge-pachca-alert-bridge", namespace="monitoring"})'
    )
    for rule in rules:
        assert rule["labels"]["component"] == "pachca-alert-bridge", rule["alert"]
        assert rule["labels"]["to"] == "mail", rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
    notes = render_notes({"prometheusRule": {"enabled": True}})
    assert 'component="pachca-alert-bridge"' in notes
    assert "OTHER than the bridge" in notes


COUNTER_IN_INCREASE = re.compile(r"increase\((bridge_\w+_total)\{([^}]*)\}\[")


async def test_every_counter_a_rule_watches_exists_at_zero_before_its_first_event(
    aiohttp_client: Any,
) -> None:
    """`increase()` over a series born at 1 stays 0: the first dead letter, 503 or 429 would
    never alert. A freshly started bridge must expose each watched label set at 0."""
    from prometheus_client.parser import text_string_to_metric_families

    from bridge.metrics import Metrics
    from bridge.pachca import DryRunPachca
    from bridge.rules import load_rules
    from bridge.settings import Settings
    from bridge.store.memory import MemoryStore
    from bridge.web.app import create_app

    rules_dir = Path(__file__).resolve().parents[1] / "rules"
    app = create_app(
        Settings.from_environ({}), load_rules(rules_dir), MemoryStore(), DryRunPachca(), Metrics()
    )
    client = await aiohttp_client(app)
    text = await (await client.get("/metrics")).text()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    watched = [
        (rule["alert"], m.group(1), m.group(2))
        for rule in prometheus_rules()
        for m in COUNTER_IN_INCREASE.finditer(rule["expr"])
    ]
    assert {name for _, name, _ in watched} >= {
        "bridge_deliveries_total",
        "bridge_requests_rejected_total",
        "bridge_pachca_requests_total",
        "bridge_background_restarts_total",
    }
    for alert, name, selector in watched:
        wanted = [
            (label, op, value)
            for label, op, value in re.findall(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', selector)
            if label != "job"  # the scrape adds it
        ]

        def matches(labels: dict[str, str], wanted: list[tuple[str, str, str]] = wanted) -> bool:
            for label, op, value in wanted:
                have = labels.get(label, "")
                if op == "=" and have != value:
                    return False
                if op == "=~" and not re.fullmatch(value, have):
                    return False
            return True

        found = [s for s in samples if s.name == name and matches(s.labels)]
        assert found, f"{alert}: no {name}{{{selector}}} series before the first event"
        assert all(s.value == 0 for s in found)


def test_every_pachca_endpoint_the_client_calls_is_pre_created() -> None:
    from bridge import pachca
    from bridge.metrics import PACHCA_ENDPOINTS

    source = Path(pachca.__file__).read_text()
    called = set(re.findall(r'(?<!f)"((?:GET|PUT|POST|DELETE) /[^"]*)"', source))
    assert called == set(PACHCA_ENDPOINTS)


def deployment_of(values: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = by_kind(render(values), "Deployment")
    return dict(deployment)


def test_grafana_values_reach_the_bridge() -> None:
    docs = render(
        {
            "grafana": {"url": "http://grafana.monitoring"},
            "secrets": {"grafanaWebhookSecret": "gws", "grafanaToken": "glsa"},
        }
    )
    (secret,) = by_kind(docs, "Secret")
    assert secret["stringData"]["grafana-webhook-secret"] == "gws"
    assert secret["stringData"]["grafana-token"] == "glsa"
    (deployment,) = by_kind(docs, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GRAFANA_URL"]["value"] == "http://grafana.monitoring"
    for name, key in (
        ("GRAFANA_WEBHOOK_SECRET", "grafana-webhook-secret"),
        ("GRAFANA_TOKEN", "grafana-token"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == key


def test_extra_volumes_let_secrets_come_from_files() -> None:
    pod = deployment_of(
        {
            "extraVolumes": [{"name": "tokens", "secret": {"secretName": "pachca"}}],
            "extraVolumeMounts": [
                {"name": "tokens", "mountPath": "/run/secrets/pachca", "readOnly": True}
            ],
            "extraEnv": [{"name": "PACHCA_TOKEN_FILE", "value": "/run/secrets/pachca/token"}],
        }
    )["spec"]["template"]["spec"]
    assert {"name": "tokens", "secret": {"secretName": "pachca"}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "tokens", "mountPath": "/run/secrets/pachca", "readOnly": True} in mounts


def test_replicas_are_spread_over_nodes_by_default() -> None:
    ha = ci_values(CHART / "ci" / "ha-values.yaml")
    pod = deployment_of(ha)["spec"]["template"]["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "bridge"
    assert "topologySpreadConstraints" not in deployment_of({})["spec"]["template"]["spec"]
    zones = [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
        }
    ]
    pod = deployment_of({**ha, "topologySpreadConstraints": zones})["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"] == zones


def test_dashboard_has_job_and_namespace_variables_and_intake_latency() -> None:
    dashboard = json.loads((CHART / "dashboards" / "pachca-alert-bridge.json").read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "namespace"} <= variables
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        for series in re.findall(r"\bbridge_\w+(?:\{[^}]*\})?", expr):
            assert 'job=~"$job"' in series and 'namespace=~"$namespace"' in series, expr
    assert any("bridge_intake_duration_seconds_bucket" in e for e in exprs)
    exported = exported_metric_names()
    for expr in exprs:
        for name in re.findall(r"\bbridge_\w+", expr):
            assert name in exported, name


def test_notes_use_one_credentials_layout_and_warn_what_would_fail() -> None:
    notes = render_notes({})
    path = "/etc/alertmanager/secrets/bridge-pachca-alert-bridge/webhook-token"
    assert path in notes
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    chart_readme = (CHART / "README.md").read_text()
    for text in (readme, chart_readme):
        files = set(re.findall(r"credentials_file: (\S+)", text))
        assert files and all(
            f.startswith("/etc/alertmanager/secrets/") and f.endswith("/webhook-token")
            for f in files
        ), files
    # register-webhook needs a public URL: not suggested without one
    assert "register-webhook" in render_notes({"pachca": {"publicUrl": "https://b.example"}})
    assert "exec deploy" not in notes and "pachca.publicUrl" in notes
    # webhook mode without a signing secret refuses every press: say so
    assert "no signing secret" in notes
    signed = render_notes({"secrets": {"pachcaSigningSecret": "s"}})
    assert "no signing secret" not in signed
    assert "no signing secret" not in render_notes({"pachca": {"callbackMode": "poll"}})


def test_ui_values_reach_the_bridge_and_the_pages_go_through_the_ingress_only_with_auth() -> None:
    ingress = {"enabled": True, "host": "b.example"}
    docs = render(
        {
            "secrets": {"uiSecret": "s", "uiBasicAuth": "ops:pw"},
            "ui": {
                "linkTtl": "30d",
                "userHeader": "X-Auth-Request-User",
                "exposeThroughIngress": True,
            },
            "ingress": ingress,
        }
    )
    (secret,) = by_kind(docs, "Secret")
    assert secret["stringData"]["ui-secret"] == "s" and secret["stringData"]["ui-basic-auth"]
    (deployment,) = by_kind(docs, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BRIDGE_UI_LINK_TTL"]["value"] == "30d"
    assert env["BRIDGE_UI_USER_HEADER"]["value"] == "X-Auth-Request-User"
    assert env["BRIDGE_UI_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "ui-secret"
    (ing,) = by_kind(docs, "Ingress")
    paths = {p["path"] for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]}
    assert {"/pachca/webhook", "/incidents", "/stats", "/api/v1/incidents", "/ui.css"} <= paths
    # not without an access mode: the pages would be open to the internet
    needs = re.escape("ui.exposeThroughIngress needs an access mode")
    with pytest.raises(helm.HelmRenderError, match=needs):
        render({"ui": {"exposeThroughIngress": True}, "ingress": ingress})
    (plain,) = by_kind(render({"ingress": ingress}), "Ingress")
    assert [p["path"] for r in plain["spec"]["rules"] for p in r["http"]["paths"]] == [
        "/pachca/webhook"
    ]


def test_the_readme_names_the_scope_of_every_pachca_call() -> None:
    """An operator creating the bot learns every scope its token needs (as Pachca's spec
    names them) from the set-up steps: a call added without its scope fails this."""
    import yaml

    from bridge.metrics import PACHCA_ENDPOINTS
    from tests.fake_pachca import SPEC_PATH

    spec = yaml.safe_load(SPEC_PATH.read_text())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    setup = readme.split("## Pachca bot set-up", 1)[1].split("\n## ", 1)[0]
    for endpoint in PACHCA_ENDPOINTS:
        method, path = endpoint.split(" ", 1)
        scope = spec["paths"][path][method.lower()]["x-requirements"]["scope"]
        assert f"`{scope}`" in setup, f"{endpoint} needs {scope}"
