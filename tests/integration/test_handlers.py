"""The operator's shell (quantramp.operator.handlers) against the real local control plane and the
real MLflow server: the version-edit race (B1), evidence that cannot be written (B2/B10), a
permanent MLflow error in the outbox (B6a), a restart with pending effects (B6c).

The handler functions run in this process, one tick at a time, so the tests can interleave a
user's edit with a tick exactly. Evidence is given as the adapter's own data (a Snapshot); the
Prometheus adapter itself is tested against the real Prometheus in test_evidence.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from mlflow.tracking import MlflowClient

from quantramp.operator import handlers as H
from quantramp.operator import metrics as M
from quantramp.operator.evidence import Snapshot
from quantramp.operator.models import GROUP, PLURAL, VERSION
from quantramp.operator.registry import Registry

NS = "handlers"  # the e2e operator process watches "default" only
GOOD = {"pnl_usd": 100.0, "simulated_pnl_usd": 102.0, "drawdown_ratio": 0.005, "slippage_realized_bps": 1.1,
        "slippage_modeled_bps": 1.0, "fill_ratio": 0.99, "precision_ratio": 0.54, "trades": 30.0, "capital_usd": 1000.0}


class FixedEvidence:
    """The evidence cache's interface, serving a Snapshot the test sets; ``gate`` can hold a round."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, float]] = {}
        self.error: str | None = None
        self.gate: asyncio.Event | None = None
        self.entered: asyncio.Event | None = None

    async def get(self, custom=()) -> Snapshot:
        if self.gate is not None:
            self.entered.set()
            await self.gate.wait()
        snap = Snapshot(taken_at=time.monotonic(), error=self.error)
        for (ns, name, role, stage), v in self.values.items():
            snap.series.setdefault((ns, name), {})[(role, stage)] = v
        return snap


@pytest.fixture(scope="module")
def shell(stack):
    """The handlers' context wired to the real API server and MLflow, with fixed evidence."""
    stack.install_crd()
    k8s_config.load_kube_config(config_file=stack.env["KUBECONFIG"])
    H.CTX.apps, H.CTX.core, H.CTX.custom = k8s.AppsV1Api(), k8s.CoreV1Api(), k8s.CustomObjectsApi()
    H.CTX.registry = Registry(stack.env["MLFLOW_TRACKING_URI"])
    H.CTX.evidence = FixedEvidence()
    H.CTX.pod_env = {}
    H.CTX.reset_memory()
    stack.kubectl("create", "namespace", NS, check=False)
    # Deployments without pods: these tests drive the operator, not traders (whose models here are placeholders)
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods", "namespace": NS}, "spec": {"hard": {"pods": "0"}}}))
    return stack


def _model(stack, versions=2) -> str:
    """A registered model with ``versions`` versions (no artifacts needed), champion alias on v1."""
    name = f"hm-{uuid.uuid4().hex[:6]}"
    c = MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    c.create_registered_model(name)
    for _ in range(versions):
        c.create_model_version(name, source="s3://quantramp-test/none", run_id=None)
    c.set_registered_model_alias(name, "champion", "1")
    return name


def _create(stack, model: str, version: str = "2", **analysis) -> str:
    name = f"s-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "TradingStrategy", "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"name": model, "version": version}, "capitalUsd": 100000,
            "admission": {"mode": "off"},
            "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "0s"},
                       {"name": "canary-1", "capitalPercent": 5, "dwell": "0s", "maxDrawdown": 0.05, "pnlBand": 0.1},
                       {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.1, "pnlBand": 0.15}],
            "analysis": {"interval": "1s", "errorRetry": "1s", "criteria": {"minTrades": 5}, **analysis},
            "trader": {"barIntervalSeconds": 0.5},
        },
    }
    H.CTX.custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body)
    return name


def _obj(name: str) -> dict:
    return H.CTX.custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)


def _good(name: str, stage: str, role: str = "challenger", **kw) -> None:
    H.CTX.evidence.values[(NS, name, role, stage)] = {**GOOD, **kw}
    H.CTX.evidence.values[(NS, name, "champion", stage)] = {"precision_ratio": 0.53}


async def _tick(name: str) -> None:
    H.CTX.converged.pop((NS, name), None)
    await H.reconcile(NS, name, _obj(name))


async def _ticks(name: str, until, n: int = 20, pause: float = 1.1) -> dict:
    for _ in range(n):
        await _tick(name)
        obj = _obj(name)
        if until(obj.get("status") or {}):
            return obj
        await asyncio.sleep(pause)
    raise AssertionError(f"not reached after {n} ticks: {json.dumps(_obj(name).get('status'), indent=1)[:3000]}")


def test_b1_a_version_edit_during_an_analysis_round_never_promotes_the_new_version(shell):
    async def go():
        model = _model(shell, versions=3)
        name = _create(shell, model)
        for stage in ("shadow", "canary-1", "production"):
            _good(name, stage)
        await _ticks(name, lambda st: st.get("stage") == "canary-1" and not any(e["state"] == "Pending" for e in st.get("effects", [])))
        await asyncio.sleep(1.1)
        ev = H.CTX.evidence
        ev.gate, ev.entered = asyncio.Event(), asyncio.Event()
        conflicts = M.CONFLICTS._value.get()
        round_ = asyncio.create_task(_tick(name))  # this round would promote v2
        await ev.entered.wait()
        # the user edits the candidate while the round is in flight
        H.CTX.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {"spec": {"model": {"version": "3"}}})
        ev.gate.set()
        await round_
        ev.gate = None
        st = _obj(name)["status"]
        assert st["phase"] == "Progressing" and st["ramp"]["candidateVersion"] == "2"  # the stale decision was rejected
        assert M.CONFLICTS._value.get() == conflicts + 1
        assert shell.aliases(model).get("champion") == "1"
        obj = await _ticks(name, lambda s: s["ramp"]["candidateVersion"] == "3")
        st = obj["status"]
        assert (st["ramp"]["id"], st["stage"], st["ramp"]["championVersion"]) == ("r2", "shadow", "1")
        assert shell.aliases(model) == {"champion": "1", "challenger": "3"}
        assert [h["event"] for h in st["history"]][-1] == "RampStarted:CandidateChanged"
        dep = H.CTX.apps.read_namespaced_deployment(f"{name}-challenger", NS)
        env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
        assert env["QR_MODEL_URI"] == f"models:/{model}/3" and env["QR_PAPER"] == "true"
    asyncio.run(go())


def test_b2_b10_non_finite_evidence_is_written_as_an_error_and_the_ramp_goes_on(shell):
    async def go():
        model = _model(shell)
        name = _create(shell, model)
        _good(name, "shadow", trades=math.nan, fill_ratio=math.inf)
        obj = await _ticks(name, lambda st: (st.get("lastAnalysis") or {}).get("verdict") == "Error")
        ms = obj["status"]["lastAnalysis"]["measurements"]
        assert ms["fillRatio"]["result"] == "Error" and "value" not in ms["fillRatio"]
        _good(name, "shadow")
        _good(name, "canary-1")
        await _ticks(name, lambda st: st.get("stage") == "canary-1")
    asyncio.run(go())


def test_b6a_a_permanent_mlflow_error_on_a_tag_does_not_block_the_alias_move(shell):
    async def go():
        model = _model(shell)
        name = _create(shell, model)
        for stage in ("shadow", "canary-1", "production"):
            _good(name, stage)
        await _ticks(name, lambda st: st.get("stage") == "canary-1")
        # the last known good version disappears: tagging it fails for ever
        c = MlflowClient(shell.env["MLFLOW_TRACKING_URI"])
        c.delete_registered_model_alias(model, "champion")
        c.delete_model_version(model, "1")
        obj = await _ticks(name, lambda st: st.get("phase") == "Promoted" and not any(e["state"] == "Pending" for e in st["effects"]), n=30)
        st = obj["status"]
        assert shell.aliases(model) == {"champion": "2"}
        failed = [e for e in st["effects"] if e["state"] == "Failed"]
        assert [(e["kind"], e["version"]) for e in failed] == [("TagVersion", "1")]
        assert failed[0]["attempts"] == H.BEST_EFFORT_ATTEMPTS and "RESOURCE_DOES_NOT_EXIST" in failed[0]["lastError"]
        assert c.get_model_version(model, "2").tags["quantramp.status"] == "promoted"
    asyncio.run(go())


def test_b6c_a_restart_with_pending_effects_runs_each_once(shell):
    async def go():
        model = _model(shell)
        name = _create(shell, model)
        _good(name, "shadow", trades=1)
        await _tick(name)  # start: writes the outbox (SetAlias challenger, RampStarted event) and runs it
        obj = _obj(name)
        st = obj["status"]
        # a crash after the effects ran but before they were marked done: mark them Pending again
        for e in st["effects"]:
            e["state"], e["attempts"] = "Pending", 0
        H.write_status(obj, H.TradingStrategyStatus.model_validate(st))
        await _tick(name)
        await _tick(name)
        events = H.CTX.core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name}").items
        assert [e.reason for e in events].count("RampStarted") == 1
        assert shell.aliases(model) == {"champion": "1", "challenger": "2"}
        assert all(e["state"] == "Done" for e in _obj(name)["status"]["effects"])
    asyncio.run(go())


def test_a_stale_status_write_is_rejected_with_a_conflict(shell):
    model = _model(shell)
    name = _create(shell, model)
    asyncio.run(_tick(name))
    stale = _obj(name)
    H.CTX.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {"spec": {"capitalUsd": 5000}})
    st = H.TradingStrategyStatus.model_validate(stale["status"]).model_copy(update={"message": "stale"})
    assert H.write_status(stale, st) is None
    assert _obj(name)["status"]["message"] != "stale"


def test_capital_and_env_edits_converge_and_removed_env_goes_away(shell):
    async def go():
        model = _model(shell)
        name = _create(shell, model)
        _good(name, "shadow", trades=1)
        H.CTX.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name,
                                                    {"spec": {"trader": {"env": [{"name": "EXTRA", "value": "x"}]}}})
        await _tick(name)
        await _tick(name)
        H.CTX.custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {"spec": {"capitalUsd": 5000, "trader": {"env": []}}})
        obj = await _ticks(name, lambda st: True, n=1)
        await _tick(name)
        obj = _obj(name)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        env = {e.name: e.value for e in H.CTX.apps.read_namespaced_deployment(f"{name}-champion", NS).spec.template.spec.containers[0].env}
        assert float(env["QR_CAPITAL_USD"]) == 5000 and "EXTRA" not in env
        # drift on a field the operator owns is seen (a generation it did not apply) and undone at the next tick
        dep = H.CTX.apps.patch_namespaced_deployment(f"{name}-challenger", NS, {"spec": {"replicas": 3}})
        H.owned_deployment_changed(body=dep.to_dict() | {"metadata": {"namespace": NS, "name": dep.metadata.name,
                                   "generation": dep.metadata.generation, "labels": dep.metadata.labels}})
        assert (NS, name) not in H.CTX.converged
        await H.reconcile(NS, name, _obj(name))
        assert H.CTX.apps.read_namespaced_deployment(f"{name}-challenger", NS).spec.replicas == 1
    asyncio.run(go())


def _index(*names: str) -> dict:
    """The operator's strategies_by_model index over these strategies, as kopf would build it."""
    out: dict = {}
    for n in names:
        o = _obj(n)
        for model, claim in (H.strategies_by_model(namespace=NS, name=n, spec=o["spec"], status=o.get("status") or {},
                                                   meta=o["metadata"]) or {}).items():
            out.setdefault(model, []).append(claim)
    return out


def test_two_strategies_on_one_model_the_second_waits_until_the_first_is_gone(shell):
    async def go():
        model = _model(shell, versions=3)
        first = _create(shell, model, version="2")
        time.sleep(1.1)  # creationTimestamp has one-second resolution: make the order unambiguous
        second = _create(shell, model, version="3")
        _good(first, "shadow", trades=1)
        _good(second, "shadow", trades=1)
        # the younger one ticks first: it does not start, and moves no alias
        await H.reconcile(NS, second, _obj(second), _index(first, second))
        st = _obj(second)["status"]
        assert st["phase"] == "Pending" and f"{NS}/{first}" in st["message"]
        cond = next(c for c in st["conditions"] if c["type"] == "Progressing")
        assert (cond["status"], cond["reason"]) == ("False", "ModelInUse")
        assert shell.aliases(model) == {"champion": "1"}
        await H.reconcile(NS, first, _obj(first), _index(first, second))
        assert _obj(first)["status"]["phase"] == "Progressing"
        # the holder is active now; the other still waits, and writes nothing new while it waits
        rv = _obj(second)["metadata"]["resourceVersion"]
        await H.reconcile(NS, second, _obj(second), _index(first, second))
        assert _obj(second)["metadata"]["resourceVersion"] == rv
        assert shell.aliases(model) == {"champion": "1", "challenger": "2"}
        H.CTX.custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, first)
        await H.reconcile(NS, second, _obj(second), _index(second))
        st = _obj(second)["status"]
        assert st["phase"] == "Progressing" and st["ramp"]["candidateVersion"] == "3"
        await H.reconcile(NS, second, _obj(second), _index(second))  # runs the outbox
        assert shell.aliases(model) == {"champion": "1", "challenger": "3"}
    asyncio.run(go())
