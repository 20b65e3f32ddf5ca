"""End to end, least privilege of the operator's ServiceAccount on the real API server (issue 11 item 3).

The Harness' release (``quantramp`` in ``quantramp-system``, watching ``default``) runs the operator under
the chart's ServiceAccount. That account can make every call the chart's permission table (README,
"Permissions") lists, and is refused what it must not do: read Secrets (it may only create them, in the
namespaces it watches: each strategy's Redis Secret, whose password it derives and never reads back),
create Deployments or Secrets outside the
namespaces it watches, escalate (bind, escalate, RoleBindings, impersonation, tokens), exec into pods,
lift the admission policies. Checked with ``kubectl auth can-i --as`` (the API server's authorizer) and
with real requests under a real token of the account (``kubectl create token``). The chart's two RBAC
shapes are also installed under other release names from ``helm template`` (RBAC and ServiceAccount
only, no second operator): cluster-wide (the default) and ``watchNamespaces``."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import demo

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "quantramp"
NS = "default"  # watched by the Harness' release
SA = f"system:serviceaccount:{demo.OPERATOR_NS}:{demo.RELEASE}-operator"
UNWATCHED = "lp-unwatched"
#: API group of each resource of the permission table
GROUPS = {"tradingstrategies": "quantramp.io", "deployments": "apps", "pods": "", "events": "", "secrets": "",
          "customresourcedefinitions": "apiextensions.k8s.io", "namespaces": "",
          "clusterkopfpeerings": "kopf.dev", "kopfpeerings": "kopf.dev"}
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "clusterkopfpeerings"}
#: kopf peering (the chart's default ha.enabled): the Harness' release watches named namespaces, so its replicas use
#: the KopfPeering there, never the ClusterKopfPeering; and may patch only the release's peering object
NOT_THIS_SHAPE = {"clusterkopfpeerings"}
PEERING_NAME = {"kopfpeerings": demo.RELEASE, "clusterkopfpeerings": demo.RELEASE}


def documented() -> set[tuple[str, str]]:
    """(resource[/subresource], verb) of the chart README's permission table."""
    rows = re.findall(r"^\|[^|]+\| (?:core )?`([a-z/]+)` ([a-z, ]+) \|$", (CHART / "README.md").read_text(), re.M)
    assert len(rows) >= 10, rows
    return {(res, verb.strip()) for res, verbs in rows for verb in verbs.split(",")}


def can_i(stack, verb: str, resource: str, ns: str | None = NS, who: str = SA, name: str = "") -> bool:
    """``kubectl auth can-i`` as ``who``; ``resource`` is ``name[.group][/subresource]``; ns None: cluster-wide;
    ``name``: one object (a rule with resourceNames allows only the names it lists)."""
    res, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, f"{res}/{name}" if name else res, f"--as={who}", *([f"--subresource={sub}"] if sub else []),
            *(["-n", ns] if ns else ["--all-namespaces"])]
    out = stack.kubectl(*args, check=False)
    assert out.stdout.strip() in ("yes", "no"), out.stdout + out.stderr
    return out.stdout.strip() == "yes"


def qualified(resource: str) -> str:
    res, _, sub = resource.partition("/")
    group = GROUPS[res]
    return f"{res}.{group}" + (f"/{sub}" if sub else "") if group else resource


#: what the operator's account must never be able to do: (verb, resource, namespace or None = cluster-wide)
REFUSED = [
    # Secrets: never read (redisacl derives each strategy's password; its Secret is created, 409 is success)
    *[(v, "secrets", ns) for v in ("get", "list", "watch", "patch", "update", "delete") for ns in (NS, demo.OPERATOR_NS, "kube-system")],
    ("list", "secrets", None), ("watch", "secrets", None), ("get", "secrets", None),
    *[("create", "secrets", ns) for ns in (demo.OPERATOR_NS, "kube-system", UNWATCHED)],
    ("get", "configmaps", NS),
    *[(v, "deployments.apps", ns) for v in ("create", "patch") for ns in ("kube-system", demo.OPERATOR_NS, UNWATCHED)],
    ("update", "deployments.apps", NS), ("delete", "deployments.apps", NS),
    ("create", "pods", NS), ("get", "pods", NS), ("create", "pods/exec", NS), ("get", "pods/log", NS),
    ("create", "pods/portforward", NS), ("create", "pods/attach", NS),
    ("create", "tradingstrategies.quantramp.io", NS), ("delete", "tradingstrategies.quantramp.io", NS),
    ("list", "tradingstrategies.quantramp.io", UNWATCHED),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None), ("create", "rolebindings.rbac.authorization.k8s.io", NS),
    ("create", "clusterroles.rbac.authorization.k8s.io", None), ("bind", "clusterroles.rbac.authorization.k8s.io", None),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", None), ("escalate", "roles.rbac.authorization.k8s.io", NS),
    ("impersonate", "users", None), ("impersonate", "groups", None), ("impersonate", "serviceaccounts", NS),
    ("create", "serviceaccounts/token", demo.OPERATOR_NS),
    ("update", "validatingadmissionpolicies.admissionregistration.k8s.io", None),
    ("delete", "validatingadmissionpolicybindings.admissionregistration.k8s.io", None),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("get", "nodes/proxy", None),
    ("*", "*", NS),
]


@pytest.fixture(scope="module")
def lp(operator_stack):
    operator_stack.kubectl("create", "namespace", UNWATCHED, check=False)
    yield operator_stack
    operator_stack.kubectl("delete", "namespace", UNWATCHED, "--wait=false", check=False)


@pytest.fixture(scope="module")
def token(lp) -> str:
    """A real token of the operator's ServiceAccount (TokenRequest, 10 minutes)."""
    out = lp.kubectl("create", "token", f"{demo.RELEASE}-operator", "-n", demo.OPERATOR_NS, "--duration=10m")
    return out.stdout.strip()


def as_operator(stack, token: str, *args: str) -> subprocess.CompletedProcess:
    """kubectl authenticated by the operator's own token (the admin kubeconfig's server and CA)."""
    return stack.kubectl(f"--token={token}", *args, check=False)


def test_the_permission_table_is_what_the_tests_know():
    assert {r.partition("/")[0] for r, _ in documented()} == set(GROUPS)
    assert {v for r, v in documented() if r == "secrets"} == {"create"}, "Secrets: create only, never read"


def ha_enabled(stack) -> bool:
    """Whether the Harness' release runs peered replicas (the peering rules exist only then)."""
    values = json.loads(stack.helm("get", "values", demo.RELEASE, "-n", demo.OPERATOR_NS, "-a", "-o", "json").stdout)
    return bool((values.get("ha") or {}).get("enabled"))


def test_the_operators_account_can_make_every_documented_call(lp):
    skip = NOT_THIS_SHAPE | (set() if ha_enabled(lp) else {"kopfpeerings"})
    missing = [(verb, res) for res, verb in sorted(documented()) if res not in skip
               and not can_i(lp, verb, qualified(res), None if res in CLUSTER_SCOPED else NS,
                             name=PEERING_NAME.get(res, "") if verb == "patch" else "")]
    assert not missing, f"documented but refused to {SA}: {missing}"


def test_the_operators_account_patches_only_its_own_peering(lp):
    if not ha_enabled(lp):  # one standalone replica: no peering rule at all
        assert not can_i(lp, "list", "kopfpeerings.kopf.dev", NS) and not can_i(lp, "patch", "kopfpeerings.kopf.dev", NS, name=demo.RELEASE)
        return
    assert can_i(lp, "patch", "kopfpeerings.kopf.dev", NS, name=demo.RELEASE)
    assert can_i(lp, "watch", "kopfpeerings.kopf.dev", NS) and can_i(lp, "list", "kopfpeerings.kopf.dev", NS)
    for verb, name, ns in (("patch", "someone-else", NS), ("patch", "", NS), ("create", "", NS), ("delete", demo.RELEASE, NS),
                           ("get", demo.RELEASE, NS), ("patch", demo.RELEASE, UNWATCHED)):
        assert not can_i(lp, verb, "kopfpeerings.kopf.dev", ns, name=name), (verb, name, ns)
    for verb in ("list", "watch", "patch"):  # the cluster-wide peering is not this (namespaced) release's
        assert not can_i(lp, verb, "clusterkopfpeerings.kopf.dev", None, name=demo.RELEASE if verb == "patch" else "")


def test_the_operators_account_is_refused_what_it_must_not_do(lp):
    allowed = [(verb, res, ns) for verb, res, ns in REFUSED if can_i(lp, verb, res, ns)]
    assert not allowed, f"{SA} may: {allowed}"


def test_real_requests_under_the_operators_token(lp, token):
    for args in (("get", "tradingstrategies", "-n", NS), ("get", "deployments", "-n", NS), ("get", "pods", "-n", NS),
                 ("get", "crd"), ("get", "namespaces")):  # lists: the account may list and watch, not get
        out = as_operator(lp, token, *args)
        assert out.returncode == 0, (args, out.stderr)
    who = 'User "system:serviceaccount:quantramp-system:quantramp-operator" cannot'
    refused = {
        ("get", "secrets", "-n", NS): 'cannot list resource "secrets"',
        ("get", "secrets", "-A"): 'cannot list resource "secrets"',
        ("get", "secret", f"{demo.RELEASE}-redis", "-n", demo.OPERATOR_NS): 'cannot get resource "secrets"',
        ("get", "secret", "lp-any-trader-redis", "-n", NS): 'cannot get resource "secrets"',
        ("create", "secret", "generic", "lp-planted", "--from-literal=k=v", "-n", UNWATCHED, "--dry-run=server"):
            'cannot create resource "secrets"',
        ("create", "deployment", "lp-miner", "--image=quantramp:dev", "-n", "kube-system", "--dry-run=server"):
            'cannot create resource "deployments"',
        ("create", "deployment", "lp-miner", "--image=quantramp:dev", "-n", UNWATCHED, "--dry-run=server"):
            'cannot create resource "deployments"',
        ("create", "clusterrolebinding", "lp-escalate", "--clusterrole=cluster-admin", f"--serviceaccount={demo.OPERATOR_NS}:{demo.RELEASE}-operator",
         "--dry-run=server"): 'cannot create resource "clusterrolebindings"',
        ("create", "rolebinding", "lp-escalate", "--clusterrole=admin", f"--serviceaccount={demo.OPERATOR_NS}:{demo.RELEASE}-operator",
         "-n", NS, "--dry-run=server"): 'cannot create resource "rolebindings"',
        ("create", "token", f"{demo.RELEASE}-operator", "-n", demo.OPERATOR_NS): 'cannot create resource "serviceaccounts/token"',
        ("delete", "validatingadmissionpolicybinding", "quantramp-kill-switch-guard", "--dry-run=server"):
            'cannot delete resource "validatingadmissionpolicybindings"',
    }
    for args, words in refused.items():
        out = as_operator(lp, token, *args)
        assert out.returncode != 0 and "forbidden" in out.stderr.lower() and who in out.stderr and words in out.stderr, (args, out.stderr)


def _install_rbac(stack, release: str, ns: str, *sets: str) -> str:
    """Apply only the RBAC and ServiceAccount of the chart rendered as ``release`` in ``ns``; returns the manifest."""
    stack.kubectl("create", "namespace", ns, check=False)
    manifest = stack.helm("template", release, str(CHART), "-n", ns, "--show-only", "templates/rbac.yaml",
                          "--show-only", "templates/serviceaccount.yaml", *[a for s in sets for a in ("--set", s)]).stdout
    stack.kubectl("apply", "-f", "-", stdin=manifest)  # every namespaced object names its namespace
    return manifest


@pytest.fixture(scope="module")
def other_shapes(lp):
    for ns in ("lp-a", "lp-b"):
        lp.kubectl("create", "namespace", ns, check=False)
    wide = _install_rbac(lp, "lp-wide", "lp-wide")
    scoped = _install_rbac(lp, "lp-ns", "lp-ns", "watchNamespaces={lp-a}")
    yield lp
    for manifest in (wide, scoped):
        lp.kubectl("delete", "--ignore-not-found", "-f", "-", stdin=manifest, check=False)
    for ns in ("lp-a", "lp-b", "lp-wide", "lp-ns"):
        lp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_the_cluster_wide_shape_reaches_every_namespace_but_no_secret_exec_or_escalation(other_shapes):
    s, who = other_shapes, "system:serviceaccount:lp-wide:lp-wide-quantramp-operator"
    # cluster-wide by design (the default): Deployments in any namespace; watchNamespaces is how to narrow it
    assert can_i(s, "create", "deployments.apps", "lp-b", who) and can_i(s, "patch", "tradingstrategies.quantramp.io", "lp-b", who)
    # and creates Secrets in any namespace (each strategy's Redis Secret), but reads none
    assert can_i(s, "create", "secrets", "lp-b", who) and not can_i(s, "get", "secrets", "lp-b", who)
    allowed = [(verb, res, ns) for verb, res, ns in REFUSED
               if not (res == "deployments.apps" and verb in ("create", "patch")) and res != "tradingstrategies.quantramp.io"
               and (verb, res) != ("create", "secrets")
               and can_i(s, verb, res, ns, who)]
    assert not allowed, f"{who} may: {allowed}"


def test_the_watch_namespaces_shape_stays_in_its_namespaces(other_shapes):
    s, who = other_shapes, "system:serviceaccount:lp-ns:lp-ns-quantramp-operator"
    for verb, res in (("create", "deployments.apps"), ("patch", "deployments.apps"), ("list", "tradingstrategies.quantramp.io"),
                      ("update", "tradingstrategies.quantramp.io/status"), ("create", "events"), ("list", "pods"),
                      ("create", "secrets")):
        assert can_i(s, verb, res, "lp-a", who), (verb, res, "lp-a")
        for ns in ("lp-b", "lp-ns", NS, "kube-system"):
            assert not can_i(s, verb, res, ns, who), (verb, res, ns)
    assert can_i(s, "list", "namespaces", None, who) and can_i(s, "watch", "customresourcedefinitions.apiextensions.k8s.io", None, who)
    for verb, res, ns in (("get", "secrets", "lp-a"), ("list", "secrets", "lp-a"), ("watch", "secrets", "lp-a"), ("create", "pods/exec", "lp-a"), ("create", "rolebindings.rbac.authorization.k8s.io", "lp-a"),
                          ("escalate", "roles.rbac.authorization.k8s.io", "lp-a"), ("delete", "deployments.apps", "lp-a")):
        assert not can_i(s, verb, res, ns, who), (verb, res, ns)
