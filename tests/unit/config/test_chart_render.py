"""The Helm chart rendered with the stack's helm (no cluster): lint, every documented value combination,
labels and namespaces, the schema's refusals, restricted pods, and RBAC equal to the documented calls."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from quantramp.operator.workloads import TRADER_DEFAULTS_ENV, trader_defaults_from_environment

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "quantramp"
NS = "quantramp-system"


def _helm() -> str | None:
    """$QR_BIN/helm, else the stack's build cache (hack/localstack.py), else helm on PATH."""
    cache = Path(os.environ.get("QR_CACHE", Path.home() / ".cache" / "quantramp"))
    for d in (os.environ.get("QR_BIN"), cache / f"k8s-{os.environ.get('QR_K8S_VERSION', 'v1.34.4')}" / "bin"):
        if d and (Path(d) / "helm").is_file():
            return str(Path(d) / "helm")
    return shutil.which("helm")


HELM = _helm()
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary: hack/build-control-plane.sh builds it into ~/.cache/quantramp")
MONITORING = ("--api-versions", "monitoring.coreos.com/v1/PodMonitor", "--api-versions", "monitoring.coreos.com/v1/PrometheusRule")
#: the documented combinations (values.yaml, README): name -> helm template arguments
COMBOS = {
    "defaults": (),
    "watchNamespaces": ("--set", "watchNamespaces={trading,research}"),
    "podMonitor": ("--set", "podMonitor.enabled=true", "--set", "podMonitor.additionalLabels.release=kps", *MONITORING),
    "podMonitor without the API": ("--set", "podMonitor.enabled=true"),
    "prometheusRule": ("--set", "prometheusRule.enabled=true", "--set", "prometheusRule.runbookBaseUrl=https://wiki.example.com/rb",
                       "--set", "prometheusRule.additionalLabels.release=kps", *MONITORING),
    "dashboard": ("--set", "dashboard.enabled=true", "--set", "dashboard.namespace=grafana"),
    "no metrics, debug, existing ServiceAccount": ("--set", "metrics.enabled=false", "--set", "logLevel=debug",
                                                  "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops"),
    "ha off": ("--set", "ha.enabled=false"),
    "ha off, watchNamespaces": ("--set", "ha.enabled=false", "--set", "watchNamespaces={trading,research}"),
    "ha, 3 replicas, own affinity": ("--set", "ha.enabled=true", "--set", "ha.replicas=3", "--set", "ha.peeringLifetimeSeconds=45",
                                     "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=pool",
                                     "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists"),
    "trader settings": ("--set", "trader.image.repository=registry.example.com/qr", "--set", "trader.image.tag=1.2.3",
                        "--set", "trader.serviceAccountName=trader", "--set", "trader.imagePullSecrets[0].name=regcred",
                        "--set", "trader.nodeSelector.pool=trading", "--set", "imagePullSecrets[0].name=regcred"),
}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterKopfPeering"}
STANDARD_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "helm.sh/chart"}


def helm(*args: str, chart: Path = CHART) -> subprocess.CompletedProcess:
    """``helm template`` of the chart with ``args`` (the defaults: ha.enabled, two peered replicas)."""
    return subprocess.run([HELM, "template", "quantramp", str(chart), "-n", NS, *args], capture_output=True, text=True)


def test_ha_off_one_standalone_replica():
    out = helm("--set", "ha.enabled=false")
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    dep = find(docs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--peering")], args
    assert not find(docs, "PodDisruptionBudget") and not find(docs, "ClusterKopfPeering") and not find(docs, "KopfPeering")


def render(*args: str, chart: Path = CHART) -> list[dict]:
    out = helm(*args, chart=chart)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def operator_pod(docs: list[dict]) -> dict:
    (dep,) = find(docs, "Deployment", "quantramp-operator")
    return dep["spec"]["template"]


def grants(docs: list[dict]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) a Role or ClusterRole of the render grants."""
    return {(g, r, v) for d in docs if d["kind"] in ("Role", "ClusterRole") for rule in d["rules"]
            for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def documented() -> set[tuple[str, str]]:
    """(resource, verb) pairs of the chart README's permission table: the operator's calls."""
    rows = re.findall(r"^\|[^|]+\| (?:core )?`([a-z/]+)` ([a-z, ]+) \|$", (CHART / "README.md").read_text(), re.M)
    assert len(rows) >= 10, rows
    return {(res, verb.strip()) for res, verbs in rows for verb in verbs.split(",")}


@pytest.fixture
def chart_with_files(tmp_path):
    """A copy of the chart with its own files/alerts.yaml (a runbook placeholder) and files/dashboard.json."""
    chart = tmp_path / "quantramp"
    shutil.copytree(CHART, chart)
    (chart / "files").mkdir(exist_ok=True)
    (chart / "files" / "alerts.yaml").write_text(yaml.safe_dump({"groups": [{"name": "quantramp", "rules": [{
        "alert": "QuantrampTraderDown", "expr": "up == 0", "for": "2m", "labels": {"severity": "critical"},
        "annotations": {"summary": "{{ $labels.pod }} down", "runbook_url": "__RUNBOOK_BASE__#trader-down"}}]}]}))
    (chart / "files" / "dashboard.json").write_text(json.dumps({"title": "quantramp", "panels": [{"id": 1}]}))
    return chart


def test_lint_strict_passes():
    out = subprocess.run([HELM, "lint", "--strict", str(CHART)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("combo", COMBOS)
def test_every_object_has_the_standard_labels_and_namespaced_ones_a_namespace(combo):
    docs = render(*COMBOS[combo])
    assert find(docs, "Deployment", "quantramp-operator")
    for d in docs:
        meta = d["metadata"]
        assert STANDARD_LABELS <= set(meta.get("labels", {})), (d["kind"], meta["name"])
        assert meta["labels"]["app.kubernetes.io/instance"] == "quantramp" and meta["labels"]["app.kubernetes.io/part-of"] == "quantramp"
        assert (d["kind"] in CLUSTER_SCOPED) != bool(meta.get("namespace")), (d["kind"], meta["name"])


def test_defaults_render_the_operator_cluster_wide_without_monitoring_objects():
    docs = render()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs if "admissionregistration" not in d["apiVersion"]) == [
        ("ClusterKopfPeering", "quantramp"), ("ClusterRole", "quantramp-operator"), ("ClusterRoleBinding", "quantramp-operator"),
        ("Deployment", "quantramp-operator"), ("PodDisruptionBudget", "quantramp-operator"), ("ServiceAccount", "quantramp-operator")]
    pod = operator_pod(docs)
    assert pod["spec"]["serviceAccountName"] == "quantramp-operator"
    c = pod["spec"]["containers"][0]
    assert c["image"] == f"quantramp:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    assert not [a for a in c["args"] if a.startswith("--namespace")]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8090"  # the operator's metrics, scraped by annotation
    dep = find(docs, "Deployment")[0]
    assert dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "quantramp"


def test_the_operator_pod_is_restricted_and_probed():
    pod = operator_pod(render())
    psc, c = pod["spec"]["securityContext"], pod["spec"]["containers"][0]
    sc = c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001 and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}] and pod["spec"]["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080} in c["ports"]


def test_trader_defaults_reach_the_operator_and_parse():
    def defaults(*args):
        env = {e["name"]: e.get("value") for e in operator_pod(render(*args))["spec"]["containers"][0]["env"]}
        return trader_defaults_from_environment({TRADER_DEFAULTS_ENV: env[TRADER_DEFAULTS_ENV]})

    d = defaults("--set", "image.repository=registry.example.com/quantramp", "--set", "image.tag=0.9.1")
    assert d.image == "registry.example.com/quantramp:0.9.1" and d.scrape_annotations
    assert d.security_context["readOnlyRootFilesystem"] and d.pod_security_context["runAsNonRoot"]
    d = defaults(*COMBOS["trader settings"])
    assert (d.image, d.service_account_name, d.node_selector) == ("registry.example.com/qr:1.2.3", "trader", {"pool": "trading"})
    assert [s.name for s in d.image_pull_secrets] == ["regcred"]
    assert not defaults(*COMBOS["podMonitor"]).scrape_annotations  # one scrape path


def test_log_format_reaches_the_operator_and_every_trader_pod():
    for fmt in ("text", "json"):
        c = operator_pod(render("--set", f"logFormat={fmt}"))["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert f"--log-format={fmt}" in c["args"]
        assert trader_defaults_from_environment({TRADER_DEFAULTS_ENV: env[TRADER_DEFAULTS_ENV]}).log_format == fmt
    out = helm("--set", "logFormat=xml")
    assert out.returncode != 0 and "logFormat" in out.stderr


def test_watch_namespaces_get_a_role_each_and_no_cluster_wide_workload_grant():
    docs = render(*COMBOS["watchNamespaces"])
    for kind in ("Role", "RoleBinding"):
        assert sorted(d["metadata"]["namespace"] for d in find(docs, kind)) == ["research", "trading"]
    for rb in find(docs, "RoleBinding"):
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "quantramp-operator", "namespace": NS}]
    (cr,) = find(docs, "ClusterRole")
    assert {(r, v) for _, r, v in grants([cr])} == {("customresourcedefinitions", "list"), ("customresourcedefinitions", "watch"),
                                                   ("namespaces", "list"), ("namespaces", "watch")}
    args = operator_pod(docs)["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=trading", "--namespace=research"]


def _calls(resource: str, *verbs: str) -> set[tuple[str, str]]:
    return {(resource, v) for v in verbs}


PEER = ("list", "watch", "patch")
#: per combo, the documented calls it does not need: the namespace observer cluster-wide, the peering of the other scope
NOT_NEEDED = {
    "defaults": _calls("namespaces", "list", "watch") | _calls("kopfpeerings", *PEER),
    "watchNamespaces": _calls("clusterkopfpeerings", *PEER),
    "ha off": _calls("namespaces", "list", "watch") | _calls("kopfpeerings", *PEER) | _calls("clusterkopfpeerings", *PEER),
    "ha off, watchNamespaces": _calls("kopfpeerings", *PEER) | _calls("clusterkopfpeerings", *PEER),
}


@pytest.mark.parametrize("combo", NOT_NEEDED)
def test_rbac_grants_exactly_the_documented_calls(combo):
    docs = render(*COMBOS[combo])
    granted = {(r, v) for _, r, v in grants(docs)}
    assert granted <= documented(), f"granted but not documented: {granted - documented()}"
    missing = documented() - granted - NOT_NEEDED[combo]
    assert not missing, f"documented but not granted: {missing}"
    assert not granted & NOT_NEEDED[combo], f"granted but not needed: {granted & NOT_NEEDED[combo]}"
    assert not [g for g in grants(docs) if "*" in g], "no wildcards"


def test_pod_monitors_only_when_enabled_and_the_api_exists():
    docs = render(*COMBOS["podMonitor"])
    mons = {d["metadata"]["name"]: d for d in find(docs, "PodMonitor")}
    assert set(mons) == {"quantramp-traders", "quantramp-operator"}
    assert all(m["metadata"]["labels"]["release"] == "kps" for m in mons.values())
    assert mons["quantramp-traders"]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "quantramp-trader"
    assert "annotations" not in operator_pod(docs)["metadata"]  # scraped once, by the PodMonitor
    assert not find(render(*COMBOS["podMonitor without the API"]), "PodMonitor")
    assert not find(render(*MONITORING), "PodMonitor")  # the API alone: off by default
    ns = render("--set", "podMonitor.enabled=true", "--set", "watchNamespaces={trading}", *MONITORING)
    assert find(ns, "PodMonitor", "quantramp-traders")[0]["spec"]["namespaceSelector"] == {"matchNames": ["trading"]}


def test_prometheus_rule_from_the_files_with_runbook_links(chart_with_files):
    docs = render(*COMBOS["prometheusRule"], chart=chart_with_files)
    (rule,) = find(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    (r,) = rule["spec"]["groups"][0]["rules"]
    assert r["annotations"]["runbook_url"] == "https://wiki.example.com/rb#trader-down"
    assert r["annotations"]["summary"] == "{{ $labels.pod }} down" and r["for"] == "2m"
    assert not find(render("--set", "prometheusRule.enabled=true", "--set", "prometheusRule.runbookBaseUrl=https://x",
                           chart=chart_with_files), "PrometheusRule")  # no API
    assert not find(render(*MONITORING, chart=chart_with_files), "PrometheusRule")  # not enabled


def test_the_repositorys_alert_rules_render_when_present():
    docs = render(*COMBOS["prometheusRule"])
    if not (CHART / "files" / "alerts.yaml").exists():
        assert not find(docs, "PrometheusRule")
        pytest.skip("charts/quantramp/files/alerts.yaml is not in the chart yet: no PrometheusRule, and the render works")
    (rule,) = find(docs, "PrometheusRule")
    assert rule["spec"]["groups"] and "__RUNBOOK_BASE__" not in json.dumps(rule)


def test_dashboard_configmap_for_the_grafana_sidecar(chart_with_files):
    (cm,) = find(render(*COMBOS["dashboard"], chart=chart_with_files), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "grafana"
    assert json.loads(cm["data"]["quantramp.json"])["title"] == "quantramp"
    assert not find(render(chart=chart_with_files), "ConfigMap")


def test_the_harness_values_render_the_names_it_uses(tmp_path):
    """hack/demo.py Harness.start_operator: release quantramp in quantramp-system, a values file."""
    values = {
        "image": {"repository": "quantramp", "tag": "dev", "pullPolicy": "IfNotPresent"},
        "prometheusUrl": "http://10.88.0.1:9090", "mlflowTrackingUri": "http://10.88.0.1:5000",
        "redis": {"url": "redis://10.88.0.1:6379/0", "existingSecret": "quantramp-redis",
                  "aclKeySecret": "quantramp-redis-acl", "aclKeyKey": "key"},
        "watchNamespaces": ["default"], "podMonitor": {"enabled": False},
        "slack": {"channel": "trading-alerts", "secretName": "quantramp-slack", "baseUrl": "http://10.88.0.1:8025/api/"},
        "jira": {"url": "http://10.88.0.1:8026", "project": "QR", "secretName": "quantramp-jira"},
        "extraEnv": [{"name": "QR_TICK_SECONDS", "value": "1"}],
    }
    f = tmp_path / "values.json"
    f.write_text(json.dumps(values))
    docs = render("-f", str(f))
    pod = operator_pod(docs)
    assert pod["spec"]["serviceAccountName"] == "quantramp-operator" and find(docs, "ServiceAccount", "quantramp-operator")
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["QR_JIRA_PROJECT"]["value"] == "QR" and env["QR_TICK_SECONDS"]["value"] == "1"
    assert env["QR_SLACK_BOT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "quantramp-slack"
    assert env["REDIS_URL"]["value"] == "redis://10.88.0.1:6379/0"
    assert env["QR_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "quantramp-redis", "key": "password"}
    assert env["QR_REDIS_ACL_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "quantramp-redis-acl", "key": "key"}
    assert json.loads(env[TRADER_DEFAULTS_ENV]["value"])["image"] == "quantramp:dev"


@pytest.mark.parametrize("args,message", [
    (("--set", "watchNamespaces=trading"), "at '/watchNamespaces': got string, want array"),
    (("--set", "watchNamespaces={Trading}"), "at '/watchNamespaces/0'"),
    (("--set", "prometheusUrl="), "at '/prometheusUrl'"),
    (("--set", "prometheusUrl=prometheus:9090"), "at '/prometheusUrl'"),
    (("--set", "promethusUrl=http://p:9090"), "additional properties 'promethusUrl' not allowed"),
    (("--set", "image.pullPolicy=Sometimes"), "at '/image/pullPolicy'"),
    (("--set", "resources.limits.memory=lots"), "at '/resources/limits/memory'"),
    (("--set", "extraEnv[0].nam=X"), "at '/extraEnv/0'"),
    (("--set", "trader.imagePullSecrets[0]=regcred"), "at '/trader/imagePullSecrets/0'"),
    (("--set", "jira.secretName=jira"), "at '/jira/url'"),
    (("--set", "prometheusRule.enabled=true"), "at '/prometheusRule/runbookBaseUrl'"),
    (("--set", "logLevel=trace"), "at '/logLevel'"),
    (("--set", "ha.replicas=1"), "at '/ha/replicas'"),
    (("--set", "ha.enabled=yes"), "at '/ha/enabled'"),
    (("--set", "ha.peeringLifetimeSeconds=5"), "at '/ha/peeringLifetimeSeconds'"),
    (("--set", "ha.replicaCount=2"), "additional properties 'replicaCount' not allowed"),
    (("--set", "redis.url=localhost:6379"), "at '/redis/url'"),
    (("--set", "redis.existingSecret=Redis_Creds"), "at '/redis/existingSecret'"),
    (("--set", "redis.aclKeySecret=ACL Key"), "at '/redis/aclKeySecret'"),
    (("--set", "mlflow.traderSecretName=a b"), "at '/mlflow/traderSecretName'"),
])
def test_the_schema_refuses_bad_values_with_a_message_naming_them(args, message):
    out = helm(*args)
    assert out.returncode != 0 and "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert message in out.stderr, out.stderr


def test_notes_say_what_to_do_next(tmp_path):
    chart = tmp_path / "quantramp"
    shutil.copytree(CHART, chart)
    # helm template leaves NOTES.txt out: render the same text as a YAML string
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "notes.yaml").write_text("notes: |\n" + "".join(f"  {line}\n" for line in notes.splitlines()))
    (doc,) = render("--show-only", "templates/notes.yaml", "--set", "watchNamespaces={trading}", "--set", "podMonitor.enabled=true",
                    chart=chart)
    text = doc["notes"]
    for expected in ("kubectl -n quantramp-system rollout status deployment/quantramp-operator", "kubectl-quantramp",
                     "kubectl apply -n trading", "files/alerts.yaml", "no monitoring.coreos.com/v1 PodMonitor API",
                     "kubectl apply --server-side", "kubectl get kopfpeering -n trading quantramp"):
        assert expected in text, text


#: a password a user might try to hand the chart; it must never be rendered, nor printed in an error
PASSWORD = "hunter2-Qx7"
#: every credential of the chart, by reference
ALL_SECRETS = ("--set", "redis.existingSecret=quantramp-redis", "--set", "redis.username=qr-operator",
               "--set", "redis.aclKeySecret=quantramp-redis-acl",
               "--set", "mlflow.existingSecret=mlflow-creds", "--set", "mlflow.traderSecretName=mlflow-trader",
               "--set", "slack.secretName=quantramp-slack", "--set", "slack.channel=alerts",
               "--set", "jira.secretName=quantramp-jira", "--set", "jira.url=https://jira.example.com", "--set", "jira.project=RISK")


def test_every_credential_is_a_secret_key_ref_and_the_trader_defaults_name_only_secrets():
    docs = render(*ALL_SECRETS)
    env = operator_pod(docs)["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs["QR_REDIS_PASSWORD"] == {"name": "quantramp-redis", "key": "password"}
    assert refs["QR_REDIS_ACL_KEY"] == {"name": "quantramp-redis-acl", "key": "key"}
    assert refs["MLFLOW_TRACKING_USERNAME"] == {"name": "mlflow-creds", "key": "username", "optional": True}
    assert refs["MLFLOW_TRACKING_PASSWORD"] == {"name": "mlflow-creds", "key": "password", "optional": True}
    assert refs["MLFLOW_TRACKING_TOKEN"] == {"name": "mlflow-creds", "key": "token", "optional": True}
    assert {"QR_SLACK_BOT_TOKEN", "QR_SLACK_WEBHOOK_URL", "QR_JIRA_TOKEN", "QR_JIRA_USER"} <= set(refs)
    assert by_name["REDIS_URL"]["value"] == "redis://redis.quantramp:6379/0" and by_name["QR_REDIS_USERNAME"]["value"] == "qr-operator"
    credential = re.compile(r"PASSWORD|TOKEN|SECRET|WEBHOOK|KEY")
    assert not [e["name"] for e in env if credential.search(e["name"]) and "value" in e], "a credential as a plain value"
    assert not find(docs, "Secret"), "the chart renders no Secret: it only refers to those the platform creates"
    d = trader_defaults_from_environment({TRADER_DEFAULTS_ENV: by_name[TRADER_DEFAULTS_ENV]["value"]})
    assert d.mlflow_secret is not None and d.mlflow_secret.name == "mlflow-trader"
    # without the Secrets: no reference to one that does not exist
    env = operator_pod(render())["spec"]["containers"][0]["env"]
    assert not [e for e in env if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]]


@pytest.mark.parametrize("args,message", [
    (("--set", f"redisUrl=redis://:{PASSWORD}@redis:6379/0"), "redisUrl was replaced by redis.url"),
    (("--set", f"redis.url=redis://:{PASSWORD}@redis:6379/0"), "redis.url must not carry credentials"),
    (("--set", f"redis.url=rediss://qr-operator:{PASSWORD}@redis:6380"), "redis.url must not carry credentials"),
    (("--set", f"mlflowTrackingUri=https://admin:{PASSWORD}@mlflow.example.com"), "mlflowTrackingUri must not carry credentials"),
    (("--set", f"prometheusUrl=http://u:{PASSWORD}@prometheus:9090"), "prometheusUrl must not carry credentials"),
    (("--set-string", f"redis.password={PASSWORD}"), "additional properties 'password' not allowed"),
    (("--set-string", f"mlflow.token={PASSWORD}"), "additional properties 'token' not allowed"),
])
def test_a_secret_value_given_to_the_chart_is_refused_and_never_printed(args, message):
    """A password handed to the chart by --set: no manifest is rendered, and the error names the value's key, not the value."""
    out = helm(*ALL_SECRETS, *args)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert PASSWORD not in out.stdout and PASSWORD not in out.stderr


def test_a_url_path_with_an_at_sign_is_not_taken_for_credentials():
    env = {e["name"]: e.get("value") for e in operator_pod(render("--set", "mlflowTrackingUri=http://mlflow:5000/a@b"))["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000/a@b"


# --- high availability: replicas, peering objects, their RBAC ---------------------------------


def _peering_rules(role: dict) -> list[dict]:
    return [r for r in role["rules"] if r["apiGroups"] == ["kopf.dev"]]


def test_ha_by_default_two_peered_replicas_rolled_one_at_a_time_with_a_budget_and_spread():
    docs = render()
    (dep,) = find(docs, "Deployment", "quantramp-operator")
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    c = pod["containers"][0]
    assert "--peering=quantramp" in c["args"] and "--peering-lifetime=30" in c["args"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    (pdb,) = find(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": spec["selector"]["matchLabels"]}}
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": spec["selector"]["matchLabels"]}}
    # the liveness and readiness probes are kopf's health endpoint, which a paused standby answers
    assert c["readinessProbe"]["httpGet"] == c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_ha_off_is_one_standalone_replica_never_two_at_once():
    docs = render(*COMBOS["ha off"])
    (dep,) = find(docs, "Deployment", "quantramp-operator")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in c["args"] if a.startswith("--peering")]
    assert "affinity" not in dep["spec"]["template"]["spec"]
    assert not find(docs, "PodDisruptionBudget") and not find(docs, "ClusterKopfPeering") and not find(docs, "KopfPeering")
    assert not [r for role in find(docs, "ClusterRole") + find(docs, "Role") for r in _peering_rules(role)]


def test_ha_values_reach_the_deployment_and_an_own_affinity_wins():
    (dep,) = find(render(*COMBOS["ha, 3 replicas, own affinity"]), "Deployment", "quantramp-operator")
    assert dep["spec"]["replicas"] == 3 and "--peering-lifetime=45" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert list(dep["spec"]["template"]["spec"]["affinity"]) == ["nodeAffinity"]


def test_cluster_wide_one_cluster_kopf_peering_watched_and_only_it_patched():
    docs = render()
    (peering,) = find(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1" and peering["metadata"]["name"] == "quantramp" and "status" not in peering
    assert not find(docs, "KopfPeering")
    (cr,) = find(docs, "ClusterRole")
    assert _peering_rules(cr) == [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["list", "watch"]},
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "resourceNames": ["quantramp"], "verbs": ["patch"]}]
    args = operator_pod(docs)["spec"]["containers"][0]["args"]
    assert f"--peering={peering['metadata']['name']}" in args and not [a for a in args if a.startswith("--namespace")]


def test_with_watch_namespaces_a_kopf_peering_in_each_and_the_rules_in_their_roles():
    docs = render(*COMBOS["watchNamespaces"])
    assert not find(docs, "ClusterKopfPeering")
    peerings = find(docs, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [("research", "quantramp"), ("trading", "quantramp")]
    for role in find(docs, "Role"):
        assert _peering_rules(role) == [
            {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["list", "watch"]},
            {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "resourceNames": ["quantramp"], "verbs": ["patch"]}]
    (cr,) = find(docs, "ClusterRole")
    assert not _peering_rules(cr)
    assert "--peering=quantramp" in operator_pod(docs)["spec"]["containers"][0]["args"]


def test_the_peering_name_follows_the_release():
    docs = render("--set", "fullnameOverride=qr-prod")
    (peering,) = find(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "qr-prod"
    (dep,) = find(docs, "Deployment", "qr-prod-operator")
    assert "--peering=qr-prod" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    (cr,) = find(docs, "ClusterRole")
    assert ["qr-prod"] in [r.get("resourceNames") for r in _peering_rules(cr)]


def test_the_chart_ships_kopfs_peering_crds_for_the_resources_kopf_uses():
    """crds/kopfpeerings.kopf.dev.yaml is kopf's peering.yaml; the group, version and plurals are those the
    installed kopf looks for (a kopf upgrade that moved them fails here)."""
    from kopf._cogs.structs import references

    crds = {d["spec"]["names"]["plural"]: d for d in yaml.safe_load_all((CHART / "crds" / "kopfpeerings.kopf.dev.yaml").read_text()) if d}
    for selector, scope, kind in ((references.CLUSTER_PEERINGS_K, "Cluster", "ClusterKopfPeering"),
                                  (references.NAMESPACED_PEERINGS_K, "Namespaced", "KopfPeering")):
        crd = crds[selector.any_name]  # kopf matches the plural (or the kind) against its any_name
        (version,) = crd["spec"]["versions"]
        assert (crd["spec"]["group"], version["name"]) == (selector.group, selector.version) == ("kopf.dev", "v1")
        assert (crd["spec"]["scope"], crd["spec"]["names"]["kind"], crd["metadata"]["name"]) == (scope, kind, f"{selector.any_name}.kopf.dev")
        assert version["served"] and version["storage"] and "subresources" not in version  # kopf patches .status in the object
        assert version["schema"]["openAPIV3Schema"]["properties"]["status"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    # the TradingStrategy CRD stays the generated one, alone in its file
    assert (CHART / "crds" / "tradingstrategies.quantramp.io.yaml").read_text() == (REPO / "crds" / "tradingstrategies.quantramp.io.yaml").read_text()
