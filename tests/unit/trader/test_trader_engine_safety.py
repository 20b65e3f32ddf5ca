"""Engine safety fixes from the independent risk review (issue 12): D5, D6, D7, D9 at engine level.

Always-long scripted model on synthetic bars; each test fails on the engine before the fix
(commit 232021b).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from quantramp.trader.broker import ImpactModel, SimBroker
from quantramp.trader.engine import Engine, EngineConfig
from quantramp.trader.governor import Reason, RiskLimits, TradingState
from quantramp.trader.marketdata import Bar

ZERO_IMPACT = ImpactModel(sigma_daily=0.0, adv_shares=1e9)


class Always:
    """P(up) = p for every row."""

    def __init__(self, p=0.9):
        self.p = p

    def p_up_one(self, x):
        return self.p


def engine(limits=None, capital=10_000.0, p=0.9, **kw) -> Engine:
    limits = limits or RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=1_000.0)
    cfg = EngineConfig(capital_usd=capital, limits=limits, entry_threshold=0.03, sizing=None, **kw)
    return Engine(cfg, Always(p), SimBroker(ZERO_IMPACT, seed=0), ZERO_IMPACT)


def bar(ts, price, o=None, volume=1e6):
    o = price if o is None else o
    return Bar(ts, o, max(o, price) + 0.01, min(o, price) - 0.01, price, volume)


def minutes(start, prices, step=timedelta(minutes=1)):
    return [bar(start + i * step, p) for i, p in enumerate(prices)]


# 2026-07-29 is a Wednesday, EDT: 09:30 New York = 13:30 UTC, close 16:00 = 20:00 UTC
DAY1 = datetime(2026, 7, 29, 13, 30, tzinfo=timezone.utc)
DAY2 = datetime(2026, 7, 30, 13, 30, tzinfo=timezone.utc)


def long_engine(**kw):
    eng = engine(**kw)
    for b in minutes(DAY1, [100.0] * 40):
        eng.on_bar(b)
    assert eng.live.position > 0
    return eng


# -- D6: one bad print never reaches a mark, never latches a halt -------------------------------
@pytest.mark.parametrize("bad", [1_000.0, 50.0, 1.0])
def test_one_bad_print_does_not_halt_or_flatten(bad):
    eng = long_engine()
    pos = eng.live.position
    t = DAY1 + timedelta(minutes=40)
    r = eng.on_bar(bar(t, bad))
    assert r.bar_refused == "price_jump"
    for i in range(1, 5):
        eng.on_bar(bar(t + timedelta(minutes=i), 100.0))
    assert eng.governor_state.trading_state == TradingState.ACTIVE
    assert eng.live.position == pos  # not force-flattened
    assert eng.governor_state.peak_equity_usd < 10_000.0 + 50.0  # the print never reached the peak
    assert eng.stats().bars_refused == {"price_jump": 1}


def test_a_move_that_persists_is_accepted_one_bar_late():
    eng = long_engine()
    t = DAY1 + timedelta(minutes=40)
    assert eng.on_bar(bar(t, 80.0)).bar_refused == "price_jump"
    assert eng.on_bar(bar(t + timedelta(minutes=1), 80.5)).bar_refused == ""
    assert eng.live.mark == pytest.approx(80.5, abs=1e-12)
    assert eng.on_bar(bar(t + timedelta(minutes=2), 80.2)).bar_refused == ""


# -- D7: an out-of-order bar never changes the day, its counters or the halt --------------------
def test_a_bar_from_yesterday_does_not_lift_a_daily_loss_halt():
    lim = RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=40.0)
    eng = engine(limits=lim)
    for b in minutes(DAY1, [100.0] * 40):
        eng.on_bar(b)
    for b in minutes(DAY2, [100.0] * 3):
        eng.on_bar(b)
    pos = eng.live.position
    assert pos > 0
    t = DAY2 + timedelta(minutes=3)
    for i, px in enumerate([99.5, 99.0, 98.9]):  # about -$55 on ~50 shares: daily-loss halt
        eng.on_bar(bar(t + timedelta(minutes=i), px))
    assert eng.governor_state.halt_reason == Reason.DAILY_LOSS_LIMIT.value
    turnover = eng.governor_state.turnover_usd
    r = eng.on_bar(bar(DAY1 + timedelta(hours=2), 98.9))  # a late bar from yesterday
    assert r.bar_refused == "out_of_order"
    assert eng.governor_state.trading_date == "2026-07-30"
    assert eng.governor_state.turnover_usd == pytest.approx(turnover, abs=1e-9)
    added = []
    for i in range(3, 20):
        s = eng.on_bar(bar(t + timedelta(minutes=i), 99.0))
        assert s.trading_state == TradingState.HALTED
        if s.fill is not None and s.fill.filled_qty > 0:
            added.append(s.fill.filled_qty)
    assert added == [] and eng.live.position == 0


def test_duplicate_bar_is_refused():
    eng = long_engine()
    t = DAY1 + timedelta(minutes=39)
    assert eng.on_bar(bar(t, 100.0)).bar_refused == "duplicate_bar"


# -- D5: the flattens go through the collar in a crash ------------------------------------------
def test_slide_into_the_close_is_flat_at_the_close():
    """D5 in practice: -2.5 %/bar from 15:50 New York; every flatten was denied by the 2 % collar
    and the position was carried overnight."""
    eng = engine(limits=RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=5_000.0))
    start = datetime(2026, 7, 29, 19, 0, tzinfo=timezone.utc)  # 15:00 New York
    series = [100.0] * 50 + [round(100.0 * 0.975 ** k, 2) for k in range(1, 11)]
    for b in minutes(start, series):  # 15:00 .. 15:59
        eng.on_bar(b)
    assert eng.live.position == 0


def test_halt_flatten_goes_through_the_collar():
    lim = RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=60.0)
    eng = engine(limits=lim)
    for b in minutes(DAY1, [100.0] * 40):
        eng.on_bar(b)
    t = DAY1 + timedelta(minutes=40)
    series = [round(100.0 * 0.975 ** k, 2) for k in range(1, 6)]
    for b in minutes(t, series):
        eng.on_bar(b)
    assert eng.governor_state.trading_state == TradingState.HALTED
    assert eng.live.position == 0


# -- D9: the bar length is a setting; on 5-minute bars the book is flat at every close ------------
def test_five_minute_bars_are_flat_at_the_close():
    eng = engine(bar_seconds=300)
    day = [bar(DAY1 + i * timedelta(minutes=5), 100.0 + 0.01 * (i % 3)) for i in range(78)]  # 09:30 .. 15:55
    positions = {}
    for b in day:
        eng.on_bar(b)
        positions[b.ts] = eng.live.position
    assert max(positions.values()) > 0
    assert positions[DAY1 + timedelta(minutes=385)] == 0  # the 15:55 bar's open filled the flatten
    nxt = eng.on_bar(bar(DAY2, 100.0))
    assert nxt.fill is None or nxt.fill.filled_qty >= 0  # nothing carried to be closed at the open


def test_engine_config_rejects_a_bad_bar_length():
    with pytest.raises(ValueError):
        EngineConfig(capital_usd=1e4, limits=RiskLimits(1.0, 1.0, 1.0), bar_seconds=0)


def test_refused_bars_are_exported_by_reason():
    from quantramp.trader.metrics import TraderMetrics

    eng = long_engine()
    m = TraderMetrics("s", "champion", "AAPL")
    t = DAY1 + timedelta(minutes=40)
    for b in (bar(t, 1_000.0), bar(DAY1 + timedelta(minutes=5), 100.0), bar(t + timedelta(minutes=1), 100.0)):
        m.observe(eng.on_bar(b), eng.stats())
    lab = {"strategy": "s", "role": "champion", "stage": ""}
    get = m.registry.get_sample_value
    assert get("quantramp_bars_refused_total", dict(lab, reason="price_jump")) == 1
    assert get("quantramp_bars_refused_total", dict(lab, reason="out_of_order")) == 1
    assert get("quantramp_bars_refused_total", dict(lab, reason="invalid_price")) == 0
