"""End to end on the real local stack: promote, roll back, printer columns, garbage collection."""

from __future__ import annotations

import json
import time

import pytest
from mlflow.tracking import MlflowClient

import demo

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ramps(operator_stack):
    """Apply both demo strategies and wait until both ramps end. Returns {name: phase}."""
    for f in ("demo-good.yaml", "demo-bad.yaml"):
        operator_stack.kubectl("apply", "-f", str(demo.EXAMPLES / f))
    yield operator_stack.wait_terminal(list(demo.EXPECTED), timeout=900)
    # the promoted champion keeps trading fast bars: stop it, so later (timing) tests run on a quiet machine
    operator_stack.kubectl("delete", "tradingstrategy", "--all", "-n", "default", "--wait=true", "--timeout=60s", check=False)


def _events(stack, name):
    out = stack.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return [e["reason"] for e in json.loads(out.stdout)["items"]]


def test_good_candidate_is_promoted(operator_stack, ramps):
    assert ramps["aapl-meanrev"] == "Promoted", operator_stack.strategies()["aapl-meanrev"].get("status")
    st = operator_stack.strategies()["aapl-meanrev"]["status"]
    assert (st["stage"], st["capitalPercent"], st["championVersion"]) == ("production", 100, "2")
    assert st["lastAnalysis"]["verdict"] == "Successful"
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["Promoted"] == "True" and conds["Progressing"] == "False"
    # the demo's admission gate warns (its models have no walk-forward edge) and says why
    admitted = next(c for c in st["conditions"] if c["type"] == "Admitted")
    assert admitted["reason"] == "AdmissionAdvisory" and "walk-forward Sharpe" in admitted["message"]
    assert operator_stack.aliases("aapl-meanrev") == {"champion": "2"}
    client = MlflowClient(operator_stack.env["MLFLOW_TRACKING_URI"])
    assert client.get_model_version("aapl-meanrev", "1").tags.get("quantramp.last_known_good") == "true"
    assert client.get_model_version("aapl-meanrev", "2").tags.get("quantramp.status") == "promoted"
    reasons = _events(operator_stack, "aapl-meanrev")
    assert "RampStarted" in reasons and reasons.count("StageAdvanced") >= 2 and "Promoted" in reasons
    dep = json.loads(operator_stack.kubectl("get", "deployment", "aapl-meanrev-champion", "-o", "json").stdout)
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QR_MODEL_URI"] == "models:/aapl-meanrev/2" and float(env["QR_CAPITAL_USD"]) == 100000
    # review B11: the champion's pod template changed once, for the promoted version; the stage
    # transitions moved its capital through Redis (live allocation) without restarting it
    assert dep["metadata"]["generation"] == 2, dep["metadata"]


def test_bad_candidate_is_rolled_back(operator_stack, ramps):
    st = operator_stack.strategies()["aapl-trend"]["status"]
    assert ramps["aapl-trend"] == "RolledBack", st
    assert st["lastAnalysis"]["verdict"] == "Failed"
    failed = [k for k, m in st["lastAnalysis"]["measurements"].items() if m["result"] == "Failed"]
    assert failed, st["lastAnalysis"]
    assert operator_stack.aliases("aapl-trend") == {"champion": "1"}
    tags = MlflowClient(operator_stack.env["MLFLOW_TRACKING_URI"]).get_model_version("aapl-trend", "2").tags
    assert tags["quantramp.status"] == "rejected"
    assert any(k in tags["quantramp.rejected_reason"] for k in failed)
    dep = json.loads(operator_stack.kubectl("get", "deployment", "aapl-trend-challenger", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 0
    # the champion (v1 throughout) was never restarted: shadow, canary-1 and the rollback changed only
    # its live allocation in Redis, not its pod template
    champ = json.loads(operator_stack.kubectl("get", "deployment", "aapl-trend-champion", "-o", "json").stdout)
    assert champ["metadata"]["generation"] == 1, champ["metadata"]
    assert "RolledBack" in _events(operator_stack, "aapl-trend")
    # the runbook's rollback, in order (seed 003 §3.1): the challenger stopped and flat first (its real pod
    # flattened as it exited), then the tag, the alias restored, the Event, Slack, the JIRA ticket
    effects = [e for e in st["effects"] if e["id"].startswith(st["incident"] + ".")]
    kinds = [e["kind"] for e in effects]
    assert kinds[0] == "StopRole" and kinds[-3:] == ["RecordEvent", "Notify", "OpenTicket"], kinds
    assert kinds.index("TagVersion") < kinds.index("SetAlias") < kinds.index("RemoveAlias") < kinds.index("RecordEvent")
    assert all(e["state"] == "Done" for e in effects), effects
    assert effects[0]["result"] == "challenger stopped flat", effects[0]
    ticket = next(t for t in operator_stack.jira_tickets() if t["key"] == st["tickets"][st["incident"]])
    impact = next(line for line in ticket["fields"]["description"].splitlines() if line.startswith("|Impact|"))
    assert impact.endswith(" USD|") and "unknown" not in impact, impact  # the retired challenger's last P&L


def test_printer_columns(operator_stack, ramps):
    out = operator_stack.kubectl("get", "tradingstrategies").stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "STAGE", "CAPITAL", "CHAMPION", "CHALLENGER", "PHASE", "KILLED", "AGE"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["aapl-meanrev"][1:6] == ["production", "100", "2", "2", "Promoted"]
    short = operator_stack.kubectl("get", "ts", "-o", "name").stdout.split()
    assert "tradingstrategy.quantramp.io/aapl-meanrev" in short  # the short name resolves


def test_deleting_a_strategy_garbage_collects_its_deployments(operator_stack, ramps):
    selector = "quantramp.io/strategy=aapl-trend"
    before = operator_stack.kubectl("get", "deployments", "-l", selector, "-o", "name").stdout.split()
    assert sorted(before) == ["deployment.apps/aapl-trend-challenger", "deployment.apps/aapl-trend-champion"]
    operator_stack.kubectl("delete", "tradingstrategy", "aapl-trend", "--wait=true")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = operator_stack.kubectl("get", "deployments,replicasets,pods", "-l", selector, "-o", "name").stdout
        if not left.strip():
            break
        time.sleep(1)
    assert not left.strip(), f"still present after 60 s: {left}"
