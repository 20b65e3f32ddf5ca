"""The real node: pods of the image built from the Dockerfile, in containers under the real kubelet.

What the old stand-in pod runner could not show: the image runs as non-root on a read-only root
filesystem without its source tree shadowing the standard library, limits land in the pod's
cgroups, `kubectl logs` and `kubectl exec` reach the container, cluster DNS and the `kubernetes`
Service answer from inside a pod, and Prometheus finds pods through the API server
(kubernetes_sd), as in production.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

NS = "node-e2e"
IMAGE = "quantramp:dev"
RESTRICTED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.fixture(scope="module")
def node(stack):
    stack.kubectl("create", "namespace", NS, check=False)
    yield stack
    stack.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _pod(name: str, command: list[str], *, restart: str = "Never", resources: dict | None = None,
         annotations: dict | None = None, ports: list | None = None) -> str:
    container = {"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": command,
                 "securityContext": RESTRICTED, "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    if resources:
        container["resources"] = resources
    if ports:
        container["ports"] = ports
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
        "spec": {"restartPolicy": restart, "containers": [container], "volumes": [{"name": "tmp", "emptyDir": {}}],
                 "terminationGracePeriodSeconds": 2},
    })


def _wait_phase(h, name: str, phases: set[str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        pod = json.loads(h.kubectl("get", "pod", name, "-n", NS, "-o", "json").stdout)
        if pod.get("status", {}).get("phase") in phases:
            return pod
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} not in {phases} after {timeout:.0f} s: {json.dumps(pod.get('status'))[:2000]}")
        time.sleep(1)


def _wait_ready(h, name: str, timeout: float = 120) -> dict:
    out = h.kubectl("wait", "pod", name, "-n", NS, "--for=condition=Ready", f"--timeout={timeout:.0f}s", check=False)
    assert out.returncode == 0, out.stderr + h.kubectl("describe", "pod", name, "-n", NS, check=False).stdout[-3000:]
    return json.loads(h.kubectl("get", "pod", name, "-n", NS, "-o", "json").stdout)


def test_the_image_runs_non_root_on_a_read_only_root_without_shadowing_the_stdlib(node):
    script = ("id -u; echo HOME=$HOME; python -c 'import operator; print(operator.eq.__name__)'; "
              "python -m quantramp.trader.modelfetch 2>&1 | head -1; "
              "quantramp-trader --help >/dev/null && echo trader-ok; quantramp-operator --help >/dev/null && echo operator-ok; "
              "touch /opt/x 2>/dev/null || echo read-only-ok")
    node.kubectl("apply", "-f", "-", stdin=_pod("image-check", ["sh", "-c", script]))
    pod = _wait_phase(node, "image-check", {"Succeeded", "Failed"})
    log = node.kubectl("logs", "image-check", "-n", NS).stdout.splitlines()
    assert pod["status"]["phase"] == "Succeeded", log
    assert log[0] == "10001"
    assert log[2] == "eq"  # the standard library's operator module, not the project's source folder
    assert log[3].startswith("usage: python -m quantramp.trader.modelfetch")
    assert log[4:] == ["trader-ok", "operator-ok", "read-only-ok"]


def test_exec_limits_in_cgroups_dns_and_the_kubernetes_service(node):
    resources = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "200Mi"}}
    node.kubectl("apply", "-f", "-", stdin=_pod("sleeper", ["sleep", "600"], restart="Always", resources=resources))
    pod = _wait_ready(node, "sleeper")
    # kubectl exec reaches the container (apiserver -> kubelet -> containerd's stream server)
    assert node.kubectl("exec", "sleeper", "-n", NS, "--", "id", "-u").stdout.strip() == "10001"
    # the limits are the kernel's: cgroup v1 memory and CFS quota of the pod's container
    cgroot = os.environ.get("QR_CGROUP_ROOT", "")
    pod_dirs = list(Path("/sys/fs/cgroup/memory", cgroot.lstrip("/")).rglob(f"pod{pod['metadata']['uid']}"))
    assert pod_dirs, f"no memory cgroup for the pod under {cgroot}"
    limits = {int(f.read_text()) for f in pod_dirs[0].glob("*/memory.limit_in_bytes")}
    assert 200 * 1024 * 1024 in limits
    quotas = {int(f.read_text()) for f in Path(str(pod_dirs[0]).replace("/memory/", "/cpu/")).glob("*/cpu.cfs_quota_us")}
    assert 50000 in quotas
    # cluster DNS (CoreDNS on the node) and the kubernetes Service (kube-proxy -> the API server)
    probe = ("import socket, ssl, urllib.request; ip = socket.gethostbyname('kubernetes.default.svc.cluster.local'); print(ip); "
             "sa = '/var/run/secrets/kubernetes.io/serviceaccount'; "
             "ctx = ssl.create_default_context(cafile=sa + '/ca.crt'); "
             "req = urllib.request.Request('https://kubernetes.default.svc/version', headers={'Authorization': 'Bearer ' + open(sa + '/token').read()}); "
             "print(urllib.request.urlopen(req, context=ctx, timeout=10).status)")
    out = node.kubectl("exec", "sleeper", "-n", NS, "--", "python", "-c", probe, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["10.0.0.1", "200"]


def test_prometheus_finds_pods_through_the_api_server(node):
    exporter = ("from prometheus_client import Counter, start_http_server; import time; "
                "Counter('qr_node_probe', 'probe').inc(); start_http_server(9100); time.sleep(600)")
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": "9100"}
    node.kubectl("apply", "-f", "-", stdin=_pod("exporter", ["python", "-c", exporter], restart="Always",
                                                 annotations=annotations, ports=[{"containerPort": 9100}]))
    _wait_ready(node, "exporter")
    query = urllib.parse.urlencode({"query": f'qr_node_probe_total{{namespace="{NS}", pod="exporter"}}'})
    deadline, result = time.monotonic() + 60, []
    while time.monotonic() < deadline and not result:
        with urllib.request.urlopen(f"{node.env['PROMETHEUS_URL']}/api/v1/query?{query}", timeout=10) as r:
            result = json.loads(r.read())["data"]["result"]
        time.sleep(1)
    assert result, "Prometheus never scraped the annotated pod"
    assert float(result[0]["value"][1]) == pytest.approx(1.0)
