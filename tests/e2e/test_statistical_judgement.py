"""End to end, issue 14 on the real local stack: an anytime-valid criterion rolls a defective
challenger back on the trader's evidence streams (real trader pods, real Prometheus), naming the
criterion and the bound; the admission gate keeps a version without edge Pending, and lets it ramp
with a warning once the platform says so."""

from __future__ import annotations

import json
import time

import pytest
import yaml

pytestmark = pytest.mark.e2e
BAD_FILLS = "aapl-fills"
NO_EDGE = "aapl-noedge"


def manifest(name, judgement=None, admission=None, criteria=None):
    return {
        "apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "model": {"name": name, "version": "2"}, "capitalUsd": 100000,
            "admission": admission or {"mode": "off"},
            "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "1h"},
                       {"name": "canary-1", "capitalPercent": 1, "dwell": "1h", "maxDrawdown": 0.5, "pnlBand": 10},
                       {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.5, "pnlBand": 10}],
            "analysis": {"interval": "2s", "criteria": {"minTrades": 1, "minPrecisionRatio": 0, "minFillRatio": 0, **(criteria or {})},
                         **({"judgement": judgement} if judgement else {})},
            "trader": {"barIntervalSeconds": 0.05},
        },
    }


def wait_for(stack, name, pred, timeout=240):
    deadline = time.monotonic() + timeout
    st = {}
    while time.monotonic() < deadline:
        st = stack.strategies().get(name, {}).get("status") or {}
        if pred(st):
            return st
        time.sleep(1)
    raise AssertionError(f"timed out; status: {json.dumps(st, indent=1)[:4000]}")


@pytest.fixture(scope="module")
def models(operator_stack):
    for name in (BAD_FILLS, NO_EDGE):
        operator_stack.train(name, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
        operator_stack.train(name, ["--kind", "logistic", "--seed", "2"])
    yield operator_stack
    for name in (BAD_FILLS, NO_EDGE):
        operator_stack.kubectl("delete", "tradingstrategy", name, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


def test_a_slippage_defect_is_rolled_back_by_its_confidence_sequence(models):
    # a limit no real fill meets (realised <= 0.2 x modelled slippage): to this strategy every healthy
    # fill is a defect of about 0.8 x the modelled bps, which its sequence must find long before the dwell;
    # the fixed-threshold criteria are made lenient so that only the sequence can roll back
    doc = manifest(BAD_FILLS, judgement={"method": "anytimeValid", "criteria": ["slippageRatio"], "minSamples": 10},
                   criteria={"maxSlippageRatio": 0.2})
    models.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
    st = wait_for(models, BAD_FILLS, lambda s: s.get("phase") in ("RolledBack", "Promoted", "Paused"))
    assert st["phase"] == "RolledBack", st.get("message")
    reason = st["history"][-1]["reason"]
    assert "slippageRatio" in reason and "upper bound" in reason and "anytime-valid" in reason, reason
    m = st["lastAnalysis"]["measurements"]["slippageRatio"]
    assert m["result"] == "Failed" and m["value"] < 0  # pass-side units: 0.2 x modelled - realised
    seq = st["criteria"]["slippageRatio"]["sequential"]
    assert seq["decision"] == "FAIL" and seq["upper"] < 0 and seq["observations"] >= 10


def test_the_admission_gate_refuses_then_warns(models):
    # the logistic model has no edge after costs on AAPL hourly bars (walk-forward Sharpe ~0.1)
    models.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(NO_EDGE, admission={"mode": "enforce"})))
    st = wait_for(models, NO_EDGE, lambda s: (s.get("message") or "").find("not admitted") >= 0, timeout=120)
    assert st["phase"] == "Pending" and "ramp" not in st
    cond = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert cond["reason"] == "AdmissionRefused"
    assert "walk-forward Sharpe" in st["message"] and "Deflated Sharpe" in st["message"]
    dep = json.loads(models.kubectl("get", "deployment", f"{NO_EDGE}-challenger", "-o", "json", check=False).stdout or "{}")
    assert (dep.get("spec") or {}).get("replicas", 0) == 0
    models.kubectl("patch", "tradingstrategy", NO_EDGE, "--type=merge", "-p", json.dumps({"spec": {"admission": {"mode": "warn"}}}))
    st = wait_for(models, NO_EDGE, lambda s: s.get("phase") == "Progressing", timeout=120)
    adm = next(c for c in st["conditions"] if c["type"] == "Admitted")
    assert adm["status"] == "False" and adm["reason"] == "AdmissionAdvisory" and "walk-forward Sharpe" in adm["message"]
