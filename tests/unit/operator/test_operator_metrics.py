"""The operator's series the alert rules need: the next analysis round's due time
(QuantrampAnalysisStale), set from the engine's grid and removed in a phase that is not analysed."""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta, timezone

from prometheus_client import REGISTRY

from quantramp.operator import engine
from quantramp.operator import handlers as H
from quantramp.operator import metrics as M
from quantramp.operator.engine import StartFacts
from quantramp.operator.models import TradingStrategySpec

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
NAME = "quantramp_operator_next_analysis_timestamp_seconds"
LABELS = {"namespace": "ns-next", "strategy": "s"}


def _spec() -> TradingStrategySpec:
    return TradingStrategySpec.model_validate({
        "model": {"name": "m", "version": "2"}, "capitalUsd": 100_000, "analysis": {"interval": "10s"},
        "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "30s"},
                   {"name": "production", "capitalPercent": 100, "dwell": "0s"}],
    })


def test_the_next_round_of_a_progressing_ramp_is_exported_and_a_pending_one_removes_it():
    spec = _spec()
    st = engine.start(spec, None, StartFacts(True, "1"), T0, "NewStrategy", 1).status
    assert st.phase == "Progressing"
    due = engine.next_round(spec, st)
    assert due == st.stage_start_time + timedelta(seconds=10)
    M.observe_next_analysis("ns-next", "s", due)
    assert REGISTRY.get_sample_value(NAME, LABELS) == due.timestamp()
    M.observe_next_analysis("ns-next", "s", None)
    assert REGISTRY.get_sample_value(NAME, LABELS) is None


def test_forget_drops_the_next_round():
    M.observe_next_analysis("ns-next", "s", T0)
    M.forget("ns-next", "s")
    assert REGISTRY.get_sample_value(NAME, LABELS) is None


def test_reconcile_feeds_the_next_round_gauge_with_the_engine_grid():
    src = inspect.getsource(H.reconcile)
    assert "M.observe_next_analysis(ns, name, engine.next_round(spec, status))" in src
