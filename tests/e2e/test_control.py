"""End to end, manual control with the real kubectl plugin (issue #8): an Inconclusive pause, abort
then retry, promote (one stage, then --full) and a rollback after promotion, on the real local
stack with the operator process and real trader pods."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

import demo

pytestmark = pytest.mark.e2e
NAME = "aapl-ctl"
#: a user metric that is neither a success nor a failure on any trader: Inconclusive every round
UNDECIDED = {"name": "capitalBand", "query": "quantramp_capital_usd", "successCondition": "result > 1000000000000",
             "failureCondition": "result < 0"}


def manifest(metrics):
    return {
        "apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": NAME, "namespace": "default"},
        "spec": {
            "model": {"name": NAME, "version": "2"}, "capitalUsd": 100000,
            "admission": {"mode": "off"},
            "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "1h"},
                       {"name": "canary-1", "capitalPercent": 1, "dwell": "1h", "maxDrawdown": 0.5, "pnlBand": 10},
                       {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.5, "pnlBand": 10}],
            # the built-in promotion criteria made lenient: the user metrics decide this ramp
            "analysis": {"interval": "2s", "metrics": metrics, "criteria": {
                "minTrades": 1, "minPrecisionRatio": 0, "minFillRatio": 0, "maxSlippageRatio": 100}},
            "trader": {"barIntervalSeconds": 0.05},
        },
    }


@pytest.fixture(scope="module")
def ctl(operator_stack):
    operator_stack.train(NAME, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
    operator_stack.train(NAME, ["--kind", "logistic", "--seed", "2"])
    operator_stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest([UNDECIDED])))
    yield operator_stack
    operator_stack.kubectl("delete", "tradingstrategy", NAME, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


def plugin(stack, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(demo.BIN / "kubectl-quantramp"), *args], env=stack.env, text=True, capture_output=True)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def wait_for(stack, pred, timeout=240):
    deadline = time.monotonic() + timeout
    st = {}
    while time.monotonic() < deadline:
        st = stack.strategies().get(NAME, {}).get("status") or {}
        if pred(st):
            return st
        time.sleep(1)
    raise AssertionError(f"timed out; status: {json.dumps(st, indent=1)[:4000]}")


def judged(st) -> bool:
    """The last round has no InsufficientData (the trader has traded): a promote can be taken."""
    ms = (st.get("lastAnalysis") or {}).get("measurements") or {}
    return bool(ms) and all(m["result"] != "InsufficientData" for m in ms.values())


def test_manual_control_end_to_end(ctl):
    # 1. an Inconclusive user metric pauses the ramp for a human
    st = wait_for(ctl, lambda s: s.get("phase") == "Paused")
    assert st["pause"]["reason"] == "InconclusiveLimit" and st["stage"] == "shadow"
    shown = plugin(ctl, "status", NAME).stdout
    assert "Paused" in shown and "capitalBand" in shown

    # 2. abort, then retry: a fresh ramp of the same candidate
    out = plugin(ctl, "abort", NAME, "--reason", "desk call", "-o", "json")
    assert json.loads(out.stdout)["taken"] is True
    st = wait_for(ctl, lambda s: s.get("phase") == "Aborted" and not any(e["state"] == "Pending" for e in s["effects"]))
    assert st["history"][-1]["reason"] == "desk call" and st["history"][-1]["event"] == "Aborted"
    assert ctl.aliases(NAME) == {"champion": "1"}
    tags = MlflowClient(ctl.env["MLFLOW_TRACKING_URI"]).get_model_version(NAME, "2").tags
    assert tags["quantramp.status"] == "aborted" and "desk call" in tags["quantramp.aborted_reason"]
    dep = json.loads(ctl.kubectl("get", "deployment", f"{NAME}-challenger", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 0
    # a promote now does not apply, and says why in one line
    refused = plugin(ctl, "promote", NAME, check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error: promote refused: promote does not apply in phase Aborted")
    plugin(ctl, "retry", NAME)
    st = wait_for(ctl, lambda s: s.get("phase") in ("Progressing", "Paused") and s["ramp"]["id"] == "r2")
    assert st["stage"] == "shadow"

    # 3. the Inconclusive pause is released by promote, one stage at a time, then --full
    st = wait_for(ctl, lambda s: s.get("phase") == "Paused" and judged(s))
    plugin(ctl, "promote", NAME, "--reason", "reviewed the capital band")
    st = wait_for(ctl, lambda s: s.get("stage") == "canary-1")
    assert st["history"][-1]["event"] == "StageAdvanced" and st["history"][-1]["reason"] == "reviewed the capital band"
    st = wait_for(ctl, lambda s: s.get("phase") == "Paused" and s.get("stage") == "canary-1" and judged(s))
    plugin(ctl, "promote", NAME, "--full")
    st = wait_for(ctl, lambda s: s.get("phase") == "Promoted" and not any(e["state"] == "Pending" for e in s["effects"]))
    assert ctl.aliases(NAME) == {"champion": "2"}

    # 4. after promotion the model stays watched: a failing safety criterion rolls back to v1
    guard = {"name": "capitalGuard", "query": "quantramp_capital_usd", "failureCondition": "result > 0", "kind": "safety"}
    ctl.kubectl("patch", "tradingstrategy", NAME, "--type", "merge", "-p",
                json.dumps({"spec": {"analysis": {"metrics": [UNDECIDED, guard]}}}))
    st = wait_for(ctl, lambda s: s.get("phase") == "RolledBack" and not any(e["state"] == "Pending" for e in s["effects"]))
    assert "capitalGuard" in st["message"] and st["history"][-1]["fromPhase"] == "Promoted"
    # a safety guard is a critical trigger: the rollback engaged the kill switch (seed 003 §3.1 step 2), in order
    assert st["killSwitch"]["engaged"] is True and st["killSwitch"]["trigger"] == "Rollback", st["killSwitch"]
    kinds = [e["kind"] for e in st["effects"] if e["id"].startswith(st["incident"] + ".")]
    assert kinds == ["BroadcastKill", "TagVersion", "SetAlias", "RemoveAlias", "RecordEvent", "Notify", "OpenTicket"], kinds
    assert ctl.aliases(NAME) == {"champion": "1"}
    assert MlflowClient(ctl.env["MLFLOW_TRACKING_URI"]).get_model_version(NAME, "2").tags["quantramp.status"] == "rejected"
    champion = json.loads(ctl.kubectl("get", "deployment", f"{NAME}-champion", "-o", "json").stdout)
    env = {e["name"]: e.get("value") for e in champion["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QR_MODEL_URI"] == f"models:/{NAME}/1"
    events = plugin(ctl, "history", NAME, "-o", "json").stdout
    assert [r["event"] for r in json.loads(events)][-1] == "RolledBack"

    # 5. after the rollback the champion trades 10% of the capital until a human clears it; the
    # running champion pod applies both changes in place (its capital gauge, scraped by Prometheus)
    assert st["reducedSizing"]["percent"] == 10 and st["allocation"]["champion"]["capitalPercent"] == 10
    wait_capital(ctl, 10_000)
    refused = plugin(ctl, "clear", NAME, check=False)
    assert refused.returncode == 2 and "--reason" in refused.stderr  # a reason is required
    plugin(ctl, "clear", NAME, "--reason", "post-mortem filed")
    st = wait_for(ctl, lambda s: s.get("reducedSizing") is None and s["history"][-1]["event"] == "SizingCleared")
    assert st["allocation"]["champion"]["capitalPercent"] == 100
    wait_capital(ctl, 100_000)


def wait_capital(stack, usd: float, timeout: float = 60) -> None:
    """Wait until Prometheus shows the champion pod's allocated capital at ``usd``."""
    import requests

    q = f'quantramp_capital_usd{{strategy="{NAME}", role="champion"}}'
    deadline, got = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        res = requests.get(f"{stack.env['PROMETHEUS_URL']}/api/v1/query", params={"query": q}, timeout=10).json()["data"]["result"]
        got = [float(r["value"][1]) for r in res]
        if got and all(abs(v - usd) < 0.01 for v in got):
            return
        time.sleep(1)
    raise AssertionError(f"champion capital {got}, expected {usd}")
