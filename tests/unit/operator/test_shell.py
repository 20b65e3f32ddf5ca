"""The handlers' pure helpers: which strategy owns a registered model, when a watched body is
decided from, and the idle memo that spares a parse per tick (no API server needed)."""

from __future__ import annotations

import collections
from datetime import datetime, timedelta, timezone

import pytest

from quantramp.operator import engine
from quantramp.operator import handlers as H
from quantramp.operator.evidence import Snapshot
from quantramp.operator.models import Criteria, Stage


@pytest.fixture(autouse=True)
def memory():
    H.CTX.reset_memory()
    yield
    H.CTX.reset_memory()


def claim(name: str, created: str, active: bool = False, ns: str = "a") -> tuple[bool, str, str, str]:
    return (active, created, ns, name)


def test_the_active_ramp_owns_the_model_whatever_its_age():
    index = {"m": [claim("old", "2026-01-01T00:00:00Z"), claim("young", "2026-02-01T00:00:00Z", active=True)]}
    assert H.model_holder(index, "m", ("a", "old")) == "a/young"
    assert H.model_holder(index, "m", ("a", "young")) == ""


def test_without_an_active_ramp_the_oldest_owns_it_then_namespace_and_name_break_ties():
    t = "2026-01-01T00:00:00Z"
    index = {"m": [claim("b", t), claim("a", t), claim("z", "2025-12-31T00:00:00Z", ns="b")]}
    assert H.model_holder(index, "m", ("a", "a")) == "b/z"
    index["m"].pop()
    assert H.model_holder(index, "m", ("a", "b")) == "a/a"
    assert H.model_holder(index, "other", ("a", "b")) == "" and H.model_holder(None, "m", ("a", "b")) == ""


def test_the_index_marks_a_claim_active_only_for_an_unfinished_ramp_on_that_model():
    spec = {"model": {"name": "m", "version": "2"}}
    meta = {"creationTimestamp": "t"}
    for phase, model, active in (("Progressing", "m", True), ("Promoted", "m", True), ("Paused", "m", True),
                                 ("RolledBack", "m", False), ("Progressing", "other", False), ("Pending", None, False)):
        status = {"phase": phase, "ramp": {"model": model}} if model else {"phase": phase}
        assert H.strategies_by_model(namespace="a", name="s", spec=spec, status=status, meta=meta) == {"m": (active, "t", "a", "s")}
    assert H.strategies_by_model(namespace="a", name="s", spec={}, status={}, meta=meta) is None


def body(rv: str) -> dict:
    return {"metadata": {"name": "s", "namespace": "a", "resourceVersion": rv}}


def test_a_watched_body_that_echoes_an_older_write_of_ours_is_not_decided_from():
    key = ("a", "s")
    assert H._fresh(key, body("5")) == body("5")  # nothing written yet: the watch is the truth
    H.CTX.written[key] = collections.deque(["7", "9"], maxlen=8)
    assert H._fresh(key, body("7")) is False  # the watch still shows our write 7, we wrote 9 since
    assert H._fresh(key, body("9")) == body("9")
    assert H._fresh(key, body("12")) == body("12")  # someone else wrote after us
    H.CTX.refetch.add(key)
    assert H._fresh(key, body("12")) is None  # the last write conflicted: read fresh


def test_an_idle_body_is_remembered_by_resource_version_until_its_round_is_due():
    key = ("a", "s")
    now = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    H.CTX.converged[key] = 1e18  # converged "now": only the round can make it due
    H.CTX.idle_until[key] = ("41", now + timedelta(seconds=5), None, None)
    # a body at the remembered version is not parsed (it is not even a valid strategy here)
    assert H.is_due(body("41"), now, key) is False
    assert H.is_due(body("41"), now + timedelta(seconds=5), key) is True
    H.CTX.idle_until[key] = ("41", None, None, None)  # a phase with no rounds
    assert H.is_due(body("41"), now + timedelta(days=1), key) is False
    # any other version is parsed again: here an invalid spec, due so that the status can say so
    assert H.is_due({**body("42"), "spec": {"model": {}}}, now, key) is True


class Latest:
    """The evidence cache's no-I/O view: the last snapshot taken."""

    def __init__(self, snap):
        self.latest = snap


def test_a_safety_guard_breached_between_rounds_makes_the_strategy_due_at_once():
    key = ("a", "s")
    now = datetime(2026, 11, 28, 12, tzinfo=timezone.utc)
    H.CTX.converged[key] = 1e18
    probe = engine.WatchProbe("challenger", "canary-1", Stage(name="canary-1", capital_percent=1, max_drawdown=0.02), Criteria())
    H.CTX.idle_until[key] = ("41", now + timedelta(minutes=5), probe, None)
    snap = Snapshot(taken_at=0.0)
    snap.series[key] = {("challenger", "canary-1"): {"drawdown_ratio": 0.01, "trades": 1.0}}
    old = getattr(H.CTX, "evidence", None)
    try:
        H.CTX.evidence = Latest(snap)
        assert H.is_due(body("41"), now, key) is False  # within the cap, round not due: idle
        snap.series[key][("challenger", "canary-1")]["drawdown_ratio"] = 0.03
        assert H.breached(key, probe) == ["drawdown"] and H.is_due(body("41"), now, key) is True
        snap.series[key][("challenger", "canary-1")]["drawdown_ratio"] = 0.0
        snap.alerts[("a", "s", "challenger", "canary-1")] = 1
        assert H.breached(key, probe) == ["criticalAlerts"]
        snap.alerts.clear()
        snap.series[key][("challenger", "shadow")] = {"drawdown_ratio": 0.5}  # another stage's pod: not this stage's evidence
        assert H.breached(key, probe) == []
        snap.error = "Prometheus down"  # no evidence is no breach (the round's error policy handles it)
        snap.series[key][("challenger", "canary-1")]["drawdown_ratio"] = 0.5
        assert H.breached(key, probe) == []
    finally:
        H.CTX.evidence = old


def test_an_urgent_step_judges_before_the_round_is_due_and_rolls_back_on_the_breach():
    from tests.unit.operator.test_engine import GOOD, ev, make_spec, started, to_stage  # the engine tests' fixtures

    spec, st = started(make_spec())
    st = to_stage(spec, st, "canary-1")
    t = st.last_analysis.time + timedelta(seconds=1)
    assert engine.step(spec, st, ev(drawdown_ratio=0.5), t).action == "none"  # not due, not urgent: no round
    d = engine.step(spec, st, ev(drawdown_ratio=0.5), t, urgent=True)
    assert d.action == "rollback" and "drawdown" in d.status.message
    assert engine.step(spec, st, GOOD, t, urgent=True).action == "hold"  # an early round that passes changes nothing else


def test_a_change_of_ready_replicas_refreshes_traders_ready_at_the_next_tick():
    """TradersReady is computed when the operator converges; a Deployment that becomes ready later must not
    leave it saying "0/1 ready" until the periodic re-apply (QR_CONVERGE_SECONDS)."""
    H.CTX.reset_memory()
    key = ("ns", "s")

    def dep(ready):
        return {"metadata": {"namespace": "ns", "name": "s-champion", "generation": 1,
                             "labels": {"quantramp.io/strategy": "s"}}, "status": {"readyReplicas": ready}}

    H.CTX.applied_generation[("ns", "s-champion")] = 1
    H.CTX.converged[key] = 1e18
    H.owned_deployment_changed(dep(0))  # first sight: nothing to compare with
    assert key in H.CTX.converged
    H.owned_deployment_changed(dep(0))
    assert key in H.CTX.converged
    H.owned_deployment_changed(dep(1))  # became ready: converge (and recompute TradersReady) next tick
    assert key not in H.CTX.converged
