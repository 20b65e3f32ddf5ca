"""The chart against the real API server: every object it renders, the PodMonitor included, is
accepted by a server-side dry run with the Prometheus Operator's own CRDs installed (copied from
the `prometheus-operator` Go module by hack/build-control-plane.sh), and a malformed PodMonitor is
refused by the same schema, so the check can fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "quantramp"
NS = "chart-e2e"


@pytest.fixture(scope="module")
def monitoring_crds(stack):
    crd_dir = Path(stack.env["QR_BIN"]).parent / "crds"
    files = sorted(crd_dir.glob("monitoring.coreos.com_*.yaml"))
    names = {f.stem.split("_", 1)[1] for f in files}
    assert {"podmonitors", "prometheusrules"} <= names, f"Prometheus Operator CRDs missing in {crd_dir}"
    for f in files:
        stack.kubectl("apply", "--server-side", "-f", str(f))
    for name in names:
        stack.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}.monitoring.coreos.com")
    # kopf's peering CRDs from the chart's crds/ (helm template leaves crds/ out, helm install applies it): the
    # render's KopfPeering needs its kind even when no test installed the chart before this one
    stack.kubectl("apply", "--server-side", "-f", str(CHART / "crds" / "kopfpeerings.kopf.dev.yaml"))
    for name in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        stack.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    stack.kubectl("create", "namespace", NS, check=False)
    return stack


def _render(h, *sets: str) -> str:
    # helm template has no cluster to ask: declare the API the PodMonitor is guarded by
    return h.helm("template", "quantramp", str(CHART), "-n", NS, "--set", "prometheusUrl=http://prometheus:9090",
                  "--api-versions", "monitoring.coreos.com/v1/PodMonitor", *[a for s in sets for a in ("--set", s)]).stdout


def test_every_rendered_object_passes_a_server_side_dry_run(monitoring_crds):
    h = monitoring_crds
    manifest = _render(h, "podMonitor.enabled=true", "watchNamespaces={default}", "ha.enabled=true")
    # every namespaced object names its namespace (the release's, or a watched one for a Role)
    out = h.kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest, check=False)
    assert out.returncode == 0, out.stderr
    kinds = {line.split("/")[0] for line in out.stdout.split()}  # "podmonitor.monitoring.coreos.com/quantramp-traders"
    assert any(k.startswith("podmonitor.monitoring.coreos.com") for k in kinds), out.stdout
    assert any(k.startswith("deployment.apps") for k in kinds), out.stdout
    assert any(k.startswith("kopfpeering.kopf.dev") for k in kinds), out.stdout  # with ha.enabled


def test_a_malformed_pod_monitor_is_refused_by_the_operators_schema(monitoring_crds):
    h = monitoring_crds
    bad = json.dumps({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
        "metadata": {"name": "bad", "namespace": NS},
        "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "metrics", "interval": "fifteen seconds"}]},
    })
    out = h.kubectl("apply", "--dry-run=server", "-f", "-", stdin=bad, check=False)
    assert out.returncode != 0
    assert "interval" in out.stderr
