"""Stress certification (trader/stress.py): every scenario that does not need Redis passes on the
real bars, and FAILS when the invariant it certifies is broken on purpose."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from quantramp.trader import engine as engine_mod
from quantramp.trader import governor as gov
from quantramp.trader import session as sess
from quantramp.trader import stress
from quantramp.trader.marketdata import load_minute_bars


@pytest.fixture(scope="module")
def model():
    m, info = stress.build_model()
    assert info["fast_path_max_abs_diff"] <= stress.THRESHOLDS["model_fast_path_max_abs_diff"]
    return m


@pytest.fixture(scope="module")
def bars():
    return load_minute_bars("AAPL")


@pytest.fixture()
def ctx(model, bars):
    """A fresh context (no cached baseline run), quick flood."""
    return stress.Context(bars=bars, model=model, quick=True)


def _run(name, ctx):
    res = stress.run_scenario(name, ctx)
    assert res.error is None, res.measurements.get("traceback")
    return res


def _failed(res):
    return {c.name for c in res.checks if not c.passed}


def permissive_check(self, symbol, target_qty, position_qty, price, last_price, now_ns, price_ts_ns):
    """A broken governor: lets every target through, no limit, no collar, no state."""
    order = int(target_qty) - int(position_qty)
    return gov.Verdict(order, (), False, False, self.state.trading_state)


# -- the model's fast path ---------------------------------------------------------------------------
def test_fast_logistic_matches_predict_proba(model):
    from quantramp.trader.train import fit, training_data

    est = fit("logistic").estimator
    X = training_data().X_test
    ref = est.predict_proba(X)[:, 1]
    assert np.max(np.abs(model.p_up(X) - ref)) <= 1e-12
    assert max(abs(model.p_up_one(x) - r) for x, r in zip(X, ref)) <= 1e-12


def test_a_wrong_fast_path_does_not_certify(monkeypatch):
    real = stress.LogisticModel.p_up
    monkeypatch.setattr(stress.LogisticModel, "p_up", lambda self, X: real(self, X) + 1e-6)
    report = stress.certify(quick=True, only=["earnings_gap"])
    assert report["scenarios"][0]["passed"]
    assert not report["model_check"]["passed"]
    assert report["certified"] is False


# -- flash crash ---------------------------------------------------------------------------------------
def test_crash_bars_drop_ten_percent_over_five_bars(bars):
    bl = list(bars)
    out = stress.crash_bars(bl, 500)
    assert out[499] == bl[499]
    assert out[504].close == pytest.approx(bl[504].close * 0.9, abs=0.01)
    assert out[520].close == pytest.approx(bl[520].close * 0.9, abs=0.01)
    moves = [out[i].close / out[i - 1].close - 1 for i in range(500, 505)]
    assert sum(moves) == pytest.approx(-0.10, abs=0.02)
    day_end = next(i for i in range(500, len(bl)) if bl[i].ts.date() != bl[500].ts.date())
    assert out[day_end] == bl[day_end]  # the next day is the real one
    for b in out[500:505]:
        assert b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high


def test_flash_crash_passes(ctx):
    res = _run("flash_crash", ctx)
    m = res.measurements
    assert res.passed, res.checks
    assert m["position_before_qty"] != 0
    assert all(x < -0.02 for x in m["crash_bar_moves_ratio"])  # every bar beyond the 2% collar
    assert m["collar_denials_in_window"] + m["halted_denials_in_window"] >= 1


def test_flash_crash_fails_when_the_governor_lets_everything_through(ctx, monkeypatch):
    monkeypatch.setattr(gov.Governor, "check", permissive_check)
    res = _run("flash_crash", ctx)
    assert not res.passed
    assert "hard_limit_breaches" in _failed(res)
    assert res.measurements["audit_violations"]
    # and the whole certification says so
    report = stress.certify(quick=True, only=["flash_crash"], model=ctx.model)
    assert report["certified"] is False


# -- earnings gap -------------------------------------------------------------------------------------
def test_earnings_gap_passes_flat_overnight(ctx):
    res = _run("earnings_gap", ctx)
    assert res.passed, res.checks
    m = res.measurements
    assert m["gap_open_vs_prev_close_ratio"] < -0.08  # the real 2026-07-31 gap
    assert m["position_at_prev_close_qty"] == 0 and m["sessions"] == 6


def test_earnings_gap_fails_without_the_end_of_day_flatten(ctx, monkeypatch):
    monkeypatch.setattr(sess.SessionClock, "phase", lambda self, ts: 1)  # never closed, never flat
    res = _run("earnings_gap", ctx)
    assert not res.passed
    assert _failed(res) & {"position_at_prev_close_qty", "sessions_not_flat_at_close"}


# -- decision flood -----------------------------------------------------------------------------------
#: latency checks are wall time on a shared machine: `stress --certify` and `make bench` report them;
#: this test asserts the behaviour (counts, errors, limits), not the timing
LATENCY_CHECKS = {"decision_p99_ms", "decision_mean_ms", "decision_max_wall_ms"}


def test_decision_flood_quick_passes(ctx):
    res = _run("decision_flood", ctx)
    m = res.measurements
    failed = [c for c in res.checks if not c.passed and c.name not in LATENCY_CHECKS]
    assert not failed and {c.name for c in res.checks} >= LATENCY_CHECKS, res.checks
    assert m["decisions"] == stress.QUICK_FLOOD_DECISIONS and m["errors"] == 0
    assert m["decision_p50_ms"] <= m["decision_p99_ms"] <= m["decision_p999_ms"] <= m["decision_max_wall_ms"]
    assert m["accepted_orders"] > 50  # a live mix of orders, not a pod stuck in REDUCING


class _Flaky:
    """The real model, failing (NaN) on every 500th call: 0.2% errors."""

    def __init__(self, inner):
        self.inner, self.n = inner, 0

    def p_up_one(self, x):
        self.n += 1
        return math.nan if self.n % 500 == 0 else self.inner.p_up_one(x)


class _Slow:
    """The real model, burning 12 ms of CPU on every 2000th call."""

    def __init__(self, inner):
        self.inner, self.n = inner, 0

    def p_up_one(self, x):
        self.n += 1
        if self.n % 2000 == 0:
            end = time.thread_time() + 0.012
            while time.thread_time() < end:
                pass
        return self.inner.p_up_one(x)


def test_decision_flood_fails_on_errors(ctx):
    ctx.model = _Flaky(ctx.model)
    res = _run("decision_flood", ctx)
    assert "error_rate" in _failed(res)
    assert res.measurements["error_rate"] >= 0.001


def test_decision_flood_fails_on_a_slow_decision(ctx):
    ctx.model = _Slow(ctx.model)
    res = _run("decision_flood", ctx)
    assert "decision_max_wall_ms" in _failed(res)


# -- broker failure -----------------------------------------------------------------------------------
def test_broker_failure_passes_with_every_fault_injected(ctx):
    res = _run("broker_failure", ctx)
    m = res.measurements
    assert res.passed, res.checks
    assert m["chaos_rejects"] > 0 and m["not_fully_filled"] > 0
    assert m["engine_position_qty"] == m["broker_position_qty"]


def test_broker_failure_fails_when_the_engine_sends_a_decision_twice(ctx, monkeypatch):
    real = engine_mod.Engine._send

    def twice(self, p, bar):
        self.broker.submit(engine_mod.Order(p.order_id, self.config.symbol, int(p.live_qty), closing=p.closing))
        return real(self, p, bar)

    monkeypatch.setattr(engine_mod.Engine, "_send", twice)
    res = _run("broker_failure", ctx)
    assert "duplicate_orders" in _failed(res)


def test_broker_failure_fails_when_an_unfilled_order_is_booked_as_filled(ctx, monkeypatch):
    real = engine_mod.Engine._as_fill

    def optimistic(self, order, upd, execs, bar_open):
        f = real(self, order, upd, execs, bar_open)
        if f.filled_qty != f.ordered_qty and not f.reason.startswith("chaos"):
            return engine_mod.Fill(f.ordered_qty, f.ordered_qty, bar_open, bar_open, 0.0, 0.0, 0.35, f.paper, "filled")
        return f

    monkeypatch.setattr(engine_mod.Engine, "_as_fill", optimistic)
    res = _run("broker_failure", ctx)
    assert _failed(res) & {"position_mismatch_bars", "cash_diff_usd"}


# -- pieces --------------------------------------------------------------------------------------------
def test_rebuild_from_fills():
    from quantramp.trader.broker import Fill

    fills = [
        Fill(10, 10, 100.0, 100.1, 10.0, 8.0, 0.35, False, "filled"),
        Fill(-4, -4, 101.0, 100.9, 10.0, 8.0, 0.35, False, "filled"),
        Fill(5, 0, 101.0, 101.0, 0.0, 0.0, 0.0, False, "rejected", "chaos"),
    ]
    rb = stress.rebuild_from_fills(fills, mark=102.0)
    assert rb["position_qty"] == 6
    assert rb["cash_usd"] == pytest.approx(-1001.0 - 0.35 + 403.6 - 0.35)
    assert rb["pnl_usd"] == pytest.approx(rb["cash_usd"] + 6 * 102.0)


def test_check_treats_missing_values_as_failed():
    assert not stress.Check("x", None, "<", 1).passed
    assert not stress.Check("x", float("nan"), "<", 1).passed
    assert stress.Check("x", 0, "==", 0).passed


def test_unknown_scenario_is_refused():
    with pytest.raises(ValueError):
        stress.certify(only=["nope"])
