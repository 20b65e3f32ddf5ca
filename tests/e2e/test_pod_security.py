"""End to end, Pod Security "restricted" (issue 11 item 4) with the API server's own PodSecurity admission.

The namespace of the strategies (``default``, watched by the Harness' release) enforces
``restricted``: a non-restricted pod is refused there (so the check can fail), the operator creates a
strategy's trader pods there without a ``FailedCreate``, and a server-side dry run of the same label
on the operator's namespace and on ``default`` names no existing pod that would violate it (a pod
that would, parked unschedulable in a scratch namespace, is named)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

import demo

pytestmark = pytest.mark.e2e

NS = "default"
ENFORCE = "pod-security.kubernetes.io/enforce"
NAME = "psa-check"
PROBE_NS = "psa-probe"


def labels(stack, ns: str) -> dict:
    return json.loads(stack.kubectl("get", "namespace", ns, "-o", "json").stdout)["metadata"].get("labels") or {}


def plain_pod(name: str, ns: str) -> dict:
    """A pod with no security context at all (baseline, not restricted), that never gets scheduled."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeSelector": {"quantramp.io/nowhere": "true"},
                     "containers": [{"name": "main", "image": "quantramp:dev", "command": ["sleep", "60"]}]}}


@pytest.fixture(scope="module")
def restricted(operator_stack):
    """``default`` enforcing restricted (set here unless the Harness already does; restored after)."""
    s = operator_stack
    before = labels(s, NS).get(ENFORCE)
    if before != "restricted":
        s.kubectl("label", "--overwrite", "namespace", NS, f"{ENFORCE}=restricted")
    s.train(NAME, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
    s.train(NAME, ["--kind", "logistic", "--seed", "2"])
    yield s
    s.kubectl("delete", "tradingstrategy", NAME, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)
    s.kubectl("delete", "namespace", PROBE_NS, "--wait=false", check=False)
    if before != "restricted":
        s.kubectl("label", "--overwrite", "namespace", NS, f"{ENFORCE}={before}" if before else f"{ENFORCE}-", check=False)


def test_a_non_restricted_pod_is_refused_in_the_strategies_namespace(restricted):
    out = restricted.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(plain_pod("psa-plain", NS)), check=False)
    assert out.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in out.stderr, out.stderr
    for words in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true", "seccompProfile"):
        assert words in out.stderr, (words, out.stderr)


def test_the_operator_creates_restricted_trader_pods(restricted):
    s = restricted
    strategy = {
        "apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": NAME, "namespace": NS},
        "spec": {"model": {"name": NAME, "version": "2"}, "capitalUsd": 100000, "admission": {"mode": "off"},
                 "stopLoss": {"enabled": False},
                 "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "1h"},
                            {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.5, "pnlBand": 10}],
                 "trader": {"barIntervalSeconds": 1}},
    }
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(strategy))
    deadline, pods = time.monotonic() + 240, []
    while time.monotonic() < deadline:
        pods = json.loads(s.kubectl("get", "pods", "-n", NS, "-l", f"quantramp.io/strategy={NAME}", "-o", "json").stdout)["items"]
        if len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods):
            break
        time.sleep(2)
    events = json.loads(s.kubectl("get", "events", "-n", NS, "--field-selector", "reason=FailedCreate", "-o", "json").stdout)["items"]
    refused = [e["message"] for e in events if NAME in e["involvedObject"]["name"]]
    assert not refused, refused
    assert sorted(p["metadata"]["labels"]["quantramp.io/role"] for p in pods) == ["challenger", "champion"], (
        [(p["metadata"]["name"], p["status"].get("phase")) for p in pods], s.kubectl("get", "rs", "-n", NS, "-o", "wide").stdout)
    assert all(p["status"].get("phase") == "Running" for p in pods), [p["status"] for p in pods]
    for p in pods:
        spec = p["spec"]
        (c,) = spec["containers"]
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
        assert spec["automountServiceAccountToken"] is False


def _violations(stack, ns: str) -> str:
    """Warnings of a server-side dry run of enforce=restricted on ``ns``: the pods there that would violate it.
    PodSecurity checks the existing pods only when the enforced (level, version) changes, so the version
    label is changed too when ``ns`` enforces restricted already."""
    version = "latest" if labels(stack, ns).get(f"{ENFORCE}-version", "latest") != "latest" else "v1.34"
    out = stack.kubectl("label", "--dry-run=server", "--overwrite", "namespace", ns, f"{ENFORCE}=restricted",
                        f"{ENFORCE}-version={version}", check=False)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_no_running_pod_of_the_operator_or_its_traders_would_violate_restricted(restricted):
    s = restricted
    s.kubectl("create", "namespace", PROBE_NS, check=False)
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(plain_pod("psa-plain", PROBE_NS)))
    probe = _violations(s, PROBE_NS)
    assert "violate the new PodSecurity enforce level" in probe and "psa-plain" in probe, probe  # the check can fail
    operator_pods = s.kubectl("get", "pods", "-n", demo.OPERATOR_NS, "-o", "name").stdout.split()
    assert operator_pods, "the operator pod is not running"
    for ns in (demo.OPERATOR_NS, NS):
        warnings = _violations(s, ns)
        assert "violate" not in warnings, (ns, warnings)
