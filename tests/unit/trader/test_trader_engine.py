"""Engine book-keeping on tiny synthetic series with a scripted model."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from quantramp.trader.broker import FeeSchedule, ImpactModel, SimBroker
from quantramp.trader.engine import Engine, EngineConfig
from quantramp.trader.features import LOOKBACK
from quantramp.trader.governor import Reason, RiskLimits, TradingState
from quantramp.trader.marketdata import Bar

FEE = 0.35  # IBKR minimum: every order here is small
WARM = LOOKBACK - 1  # index of the first bar the model is asked about


class Scripted:
    """P(up) from a script, one entry per call (the engine calls it once per bar after warm-up)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def p_up_one(self, x):
        assert x.shape == (6,)
        p = self.script[self.calls] if self.calls < len(self.script) else 0.5
        self.calls += 1
        return p


def bars(opens, closes, start=datetime(2026, 7, 29, 13, 30, tzinfo=timezone.utc), volumes=None):
    out = []
    for i, (o, c) in enumerate(zip(opens, closes)):
        v = 1e6 if volumes is None else volumes[i]
        out.append(Bar(start + timedelta(minutes=i), o, max(o, c) + 0.05, min(o, c) - 0.05, c, v))
    return out


def engine(script, limits=None, capital=10_000.0, impact=None, clock=None, **kw):
    limits = limits or RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=1_000.0)
    impact = impact or ImpactModel(sigma_daily=0.0, adv_shares=1e9)  # zero slippage: exact arithmetic
    cfg = EngineConfig(capital_usd=capital, limits=limits, entry_threshold=0.03, **kw)
    extra = {} if clock is None else {"clock": clock}
    return Engine(cfg, Scripted(script), SimBroker(impact, seed=0, fees=FeeSchedule.commission_only()), impact, **extra)


def run(eng, series):
    return [eng.on_bar(b) for b in series]


def flat_then(tail_opens, tail_closes):
    n = WARM
    return bars([100.0] * n + list(tail_opens), [100.0] * n + list(tail_closes))


def test_decision_fills_at_next_open_and_books_cash_and_fees():
    opens = [round(100 + 0.1 * i, 2) for i in range(40)]
    closes = [round(o + 0.05, 2) for o in opens]
    script = [0.9, 0.5, 0.5, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5, 0.5]  # long at bar 30, short at bar 34
    eng = engine(script)
    steps = run(eng, bars(opens, closes))

    shares = math.floor(5_000 / closes[30])
    assert steps[30].signal == 1 and steps[30].order_qty == shares and steps[30].fill is None
    assert steps[31].fill.filled_qty == shares and steps[31].fill.price == opens[31]
    flip = -shares - math.floor(5_000 / closes[34])
    assert steps[34].order_qty == flip
    assert steps[35].fill.filled_qty == flip and steps[35].fill.price == opens[35]
    assert eng.live.position == -math.floor(5_000 / closes[34])

    cash = -shares * opens[31] - FEE - flip * opens[35] - FEE
    expected = cash + eng.live.position * closes[39]
    s = eng.stats()
    assert s.pnl_usd == pytest.approx(expected, abs=1e-9)
    assert s.simulated_pnl_usd == pytest.approx(expected, abs=1e-9)  # no slippage, full fills
    assert s.fees_usd == pytest.approx(2 * FEE)
    assert s.trades == 2 and s.orders["filled"] == 2 and s.fill_ratio == 1.0
    assert s.position_notional_usd == pytest.approx(eng.live.position * closes[39])
    # long call at 30 was right (31 closed higher), short call at 34 was wrong
    assert s.calls == 2 and s.precision_ratio == 0.5
    assert s.equity_usd == pytest.approx(10_000 + expected)


def test_drawdown_follows_peak_equity():
    # long 50 @ 100; closes 100, 98, 101, 99
    series = flat_then([100, 100, 100, 100, 100], [100, 100, 98, 101, 99])
    eng = engine([0.9] * 5)
    run(eng, series)
    assert eng.live.position == 50
    peak = 10_000 + 50 * 1 - FEE
    now = 10_000 - 50 * 1 - FEE
    assert eng.stats().drawdown_ratio == pytest.approx((peak - now) / peak)
    first_dip = (10_000 - (10_000 - 100 - FEE)) / 10_000
    assert eng.stats().max_drawdown_ratio == pytest.approx(max(first_dip, (peak - now) / peak))


def test_partial_fill_diverges_live_from_simulated():
    n = WARM
    series = bars([100.0] * (n + 4), [100.0] * n + [100, 100, 102, 103], volumes=[1e6] * (n + 1) + [200.0] + [1e6] * 2)
    eng = engine([0.9, 0.9, 0.9, 0.9])
    steps = run(eng, series)
    f = steps[n + 1].fill
    assert f.status == "partial" and f.filled_qty == 20 and f.ordered_qty == 50
    assert steps[n + 1].sim_fill.filled_qty == 50
    s = eng.stats()
    assert s.fill_ratio == pytest.approx(20 / 50)
    assert s.orders["partial"] == 1
    assert eng.live.position == 20 and eng.sim.position == 50
    assert s.pnl_usd == pytest.approx(20 * 3 - FEE)
    assert s.simulated_pnl_usd == pytest.approx(50 * 3 - FEE)


def test_daily_loss_cap_turns_a_flip_into_a_close_then_denies():
    limits = RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=50.0)
    # long 50 @ 100, close 98 (-100.35 today), model flips short, then wants long again
    series = flat_then([100, 100, 98, 98, 98], [100, 98, 98, 98, 98])
    eng = engine([0.9, 0.1, 0.5, 0.9, 0.5], limits=limits)
    steps = run(eng, series)
    # the hard stop halts the governor; the engine flattens (a closing order, not a flip)
    v = steps[WARM + 1].verdict
    assert steps[WARM + 1].trading_state == TradingState.HALTED and v.state == TradingState.HALTED
    assert steps[WARM + 1].order_qty == -50 and steps[WARM + 1].closing and v.closing
    assert eng.live.position == 0
    # a new position while halted is asked for and denied, with the cause
    assert steps[WARM + 3].verdict.denied and steps[WARM + 3].order_qty == 0
    assert steps[WARM + 3].verdict.reasons == (Reason.TRADING_HALTED, Reason.DAILY_LOSS_LIMIT)
    s = eng.stats()
    assert s.orders["denied"] == 1 and s.trading_state == TradingState.HALTED
    # the entry (ATR size above the cap) was clipped by the governor's position cap, its one owner
    assert s.governor_denials == {"trading_halted": 1, "daily_loss_limit": 1, "max_position": 1}
    assert s.hard_limit_breaches == 0


def test_new_session_resets_the_daily_loss():
    limits = RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=50.0)
    day1 = flat_then([100, 100, 98], [100, 98, 98])
    eng = engine([0.9, 0.1, 0.5, 0.9], limits=limits, flatten_before_close_s=0)
    run(eng, day1)
    assert eng.day_pnl() < -50
    nxt = Bar(datetime(2026, 7, 30, 13, 30, tzinfo=timezone.utc), 98.0, 98.1, 97.9, 98.0, 1e6)
    step = eng.on_bar(nxt)
    assert eng.day_pnl() == pytest.approx(0.0)
    assert step.order_qty > 0 and step.verdict.reasons == ()


def test_flat_from_five_minutes_before_the_close():
    # 40 bars ending 15:59 New York (19:59 UTC), the model always wants to be long
    start = datetime(2026, 7, 29, 19, 20, tzinfo=timezone.utc)
    series = bars([100.0] * 40, [100.0] * 40, start=start)
    eng = engine([0.9] * 10)
    steps = run(eng, series)
    assert steps[31].fill.filled_qty == 50
    # decided on the 15:54 bar's close, filled at the 15:55 open: flat from 15:55 New York
    assert steps[34].ts.minute == 54 and steps[34].order_qty == -50 and steps[34].closing
    assert steps[35].fill.filled_qty == -50 and eng.live.position == 0
    assert all(s.order_qty == 0 for s in steps[35:])


def test_bad_bar_cancels_the_pending_order_and_takes_no_decision():
    series = flat_then([100, 100, 100], [100, 100, 100])
    series[WARM + 1] = Bar(series[WARM + 1].ts, float("nan"), 100.0, 99.0, 100.0, 1e6)
    eng = engine([0.9, 0.9, 0.9])
    steps = run(eng, series)
    assert steps[WARM].order_qty == 50
    assert steps[WARM + 1].fill is None and steps[WARM + 1].verdict.reasons == (Reason.INVALID_PRICE,)
    assert eng.stats().orders["rejected"] == 1
    # the next good bar decides again and the order goes out for the bar after
    assert steps[WARM + 2].order_qty == 50 and eng.live.position == 0
    assert eng.stats().bars == len(series)


def test_latency_is_measured_with_the_injected_clock():
    t = [0.0]

    def clock():
        t[0] += 0.004
        return t[0]

    eng = engine([0.9], clock=clock)
    steps = run(eng, flat_then([100], [100]))
    assert all(s.latency_s == pytest.approx(0.004) for s in steps)


def test_hold_keeps_the_position_and_a_repeated_signal_does_not_resize():
    # price rises: floor(5000/close) shrinks, but an existing long is not trimmed (no churn)
    series = flat_then([100, 100, 110, 120], [100, 100, 110, 120])
    eng = engine([0.9, 0.9, 0.5, 0.9])
    steps = run(eng, series)
    assert [s.order_qty for s in steps[WARM:]] == [50, 0, 0, 0]
    assert eng.stats().trades == 1


def test_precision_skips_unchanged_closes_and_scores_shorts():
    # calls at bars 30..33: long (next close equal: not scored), long (up: right),
    # short (up: wrong), short (down: right)
    series = flat_then([100, 100, 101, 102, 101], [100, 100, 101, 102, 101])
    eng = engine([0.9, 0.9, 0.1, 0.1, 0.5])
    run(eng, series)
    s = eng.stats()
    assert s.calls == 3 and s.precision_ratio == pytest.approx(2 / 3)
