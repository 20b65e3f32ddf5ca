"""The admission gate on a version's walk-forward evidence (pure)."""

from __future__ import annotations

import math

import pytest

from quantramp.operator.admission import Gate, Verdict, check

GOOD = {"wf_sharpe": 1.4, "dsr": 0.97, "pbo": 0.12, "trials": 16.0, "psr": 0.99}


def test_good_evidence_is_admitted():
    v = check(GOOD)
    assert v == Verdict(True, [], {"wf_sharpe": 1.4, "dsr": 0.97, "pbo": 0.12, "trials": 16.0})


def test_the_measured_logistic_model_fails_all_three():
    # trader.train.walk_forward_report("logistic") on the AAPL hourly bars
    v = check({"wf_sharpe": 0.144, "dsr": 0.300, "pbo": 0.842, "trials": 16.0})
    assert not v.admitted
    assert len(v.reasons) == 3
    sharpe, dsr, pbo = v.reasons
    assert "0.144" in sharpe and "is not above 1" in sharpe and "Sharpe" in sharpe
    assert "0.300" in dsr and "0.95" in dsr and "of 16 trials" in dsr
    assert "0.842" in pbo and "0.3" in pbo


@pytest.mark.parametrize(
    "key, value, admitted",
    [
        ("wf_sharpe", 1.0, False),  # runbook: > 1.0, strictly
        ("wf_sharpe", 1.0001, True),
        ("dsr", 0.95, True),  # at least 0.95
        ("dsr", 0.9499, False),
        ("pbo", 0.3, False),  # runbook: < 0.3, strictly
        ("pbo", 0.2999, True),
    ],
)
def test_thresholds_at_their_edges(key, value, admitted):
    v = check({**GOOD, key: value})
    assert v.admitted is admitted
    assert (len(v.reasons) == 0) is admitted
    if not admitted:
        assert v.reasons[0].count(f"{value:.3f}") == 1


@pytest.mark.parametrize("metrics", [None, {}, {"train_precision": 0.6, "holdout_precision": 0.5}])
def test_no_evidence_is_not_admitted_and_says_how_to_produce_it(metrics):
    v = check(metrics)
    assert not v.admitted
    assert len(v.reasons) == 1
    assert "no walk-forward evidence" in v.reasons[0]
    assert "quantramp-trader train" in v.reasons[0]


def test_a_missing_figure_is_named():
    v = check({"wf_sharpe": 1.5, "dsr": 0.99})
    assert not v.admitted
    assert v.reasons == [v.reasons[0]] and v.reasons[0].startswith("pbo is missing")


@pytest.mark.parametrize("bad", [math.nan, math.inf, "n/a", None])
def test_nan_or_garbage_is_not_admitted(bad):
    for key in ("wf_sharpe", "dsr", "pbo"):
        v = check({**GOOD, key: bad})
        assert not v.admitted
        assert len(v.reasons) == 1 and v.reasons[0].startswith(f"{key} is ")
        assert "not a finite number" in v.reasons[0]


def test_a_gate_that_is_not_required_only_advises():
    gate = Gate(required=False)
    v = check({"wf_sharpe": 0.1, "dsr": 0.3, "pbo": 0.8}, gate)
    assert v.admitted and len(v.reasons) == 3
    assert check(None, gate).admitted


def test_custom_thresholds():
    gate = Gate(min_walk_forward_sharpe=0.5, min_deflated_sharpe=0.5, max_pbo=0.9)
    assert check({"wf_sharpe": 0.6, "dsr": 0.6, "pbo": 0.8}, gate).admitted
    assert not check({"wf_sharpe": 0.6, "dsr": 0.6, "pbo": 0.8}).admitted


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"min_deflated_sharpe": 1.5}, "probability"),
        ({"max_pbo": 0.0}, "probability"),
        ({"min_walk_forward_sharpe": math.nan}, "finite"),
    ],
)
def test_gate_validates(kw, match):
    with pytest.raises(ValueError, match=match):
        Gate(**kw)


def test_the_operator_module_stays_light():
    import subprocess
    import sys

    code = "import sys, quantramp.operator.admission; print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'numpy', 'mlflow')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the gate in the engine's start -------------------------------------------------------------
def _start(verdict):
    from datetime import datetime, timezone

    from quantramp.operator import engine
    from quantramp.operator.models import TradingStrategySpec

    spec = TradingStrategySpec.model_validate({"model": {"name": "m", "version": "2"}, "capitalUsd": 100_000})
    now = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
    return engine.start(spec, None, engine.StartFacts(True, "1", admission=verdict), now, "NewStrategy", 1)


def test_engine_refuses_to_start_a_version_the_gate_refuses():
    d = _start(check({"wf_sharpe": 0.14, "dsr": 0.30, "pbo": 0.84, "trials": 16}, Gate()))
    st = d.status
    assert d.action == "pending" and st.phase == "Pending" and st.ramp is None
    cond = next(c for c in st.conditions if c.type == "Progressing")
    assert cond.reason == "AdmissionRefused"
    for words in ("walk-forward Sharpe", "0.140", "Deflated Sharpe 0.300", "overfitting 0.840", "mode to warn"):
        assert words in st.message
    # nothing is allocated to a challenger, no alias moves
    assert st.allocation.challenger.replicas == 0 and not st.effects


def test_engine_ramps_with_an_advisory_condition_in_warn_mode():
    d = _start(check({"wf_sharpe": 0.14, "dsr": 0.30, "pbo": 0.84}, Gate(required=False)))
    st = d.status
    assert d.action == "start" and st.phase == "Progressing"
    cond = next(c for c in st.conditions if c.type == "Admitted")
    assert cond.status == "False" and cond.reason == "AdmissionAdvisory" and "0.140" in cond.message


def test_engine_records_a_passing_gate():
    d = _start(check({"wf_sharpe": 1.6, "dsr": 0.97, "pbo": 0.1, "trials": 20}, Gate()))
    cond = next(c for c in d.status.conditions if c.type == "Admitted")
    assert d.action == "start" and cond.status == "True" and "dsr 0.97" in cond.message
