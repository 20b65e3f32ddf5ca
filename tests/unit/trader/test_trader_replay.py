"""The batch replay (trader/replay.py) leaves the engine exactly where an on_bar loop would.

Every figure of Engine.stats(), the whole snapshot (books, counters, governor and
sizer states, the SimBroker's RNGs, the feature window) is compared after replaying
real AAPL minute bars both ways, in settings that exercise each path of the engine:
entries and flips, end-of-day closing orders, REDUCING and HALTED, chaos rejects,
partial fills, bad bars, two loops, and a replay continuing an on_bar run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from quantramp.trader import backtest, replay
from quantramp.trader import governor as gov
from quantramp.trader import session as sess
from quantramp.trader.broker import SimBroker
from quantramp.trader.engine import EngineConfig
from quantramp.trader.marketdata import load_minute_bars
from quantramp.trader.marketdata import replay as paced
from test_trader_engine_orders import Tilt  # the deterministic stub model


class TiltRows(Tilt):
    """The same model with a batch method (the replay then uses p_up_rows)."""

    def p_up_rows(self, X):
        return np.array([self.p_up_one(x) for x in X])


@pytest.fixture(scope="module")
def bars():
    return load_minute_bars("AAPL")


def _engine(bars, cfg, model=None, chaos=0.0, participation=None, impact_bars=None):
    kw = {"chaos_reject_rate": chaos}
    if participation is not None:
        kw["participation"] = participation
    impact = backtest.impact_for(bars if impact_bars is None else impact_bars)
    broker = SimBroker(impact, seed=7, **kw)
    return backtest.Engine(config=cfg, model=model or Tilt(), broker=broker, impact=impact)


def _state(eng) -> str:
    return json.dumps(eng.snapshot(), sort_keys=True, default=str)


def _both(bars, cfg, loops=1, **kw):
    a = _engine(bars, cfg, **kw)
    for bar in paced(bars, 0.0, loops=loops):
        a.on_bar(bar)
    b = _engine(bars, cfg, **kw)
    assert replay.run(b, bars, len(bars) * loops) == len(bars) * loops
    return a, b


def _assert_same(a, b):
    sa, sb = a.stats(), b.stats()
    diff = {f.name: (getattr(sa, f.name), getattr(sb, f.name)) for f in dataclasses.fields(sa)
            if getattr(sa, f.name) != getattr(sb, f.name)}
    assert not diff, diff
    assert _state(a) == _state(b)
    assert a.governor.state_changes == b.governor.state_changes


def _tight(capital, daily_loss, soft, reduce):
    """Limits (fractions of capital) that make the governor bite on the real bars."""
    return EngineConfig(capital_usd=capital, limits=gov.RiskLimits(
        max_order_usd=capital, max_position_usd=0.5 * capital, max_daily_loss_usd=daily_loss * capital,
        drawdown_soft_usd=soft * capital, drawdown_reduce_usd=reduce * capital, drawdown_halt_usd=0.05 * capital,
    ))


@pytest.mark.parametrize("name,cfg,kw", [
    ("default", EngineConfig.for_capital(10_000.0), {}),
    ("small pod", EngineConfig.for_capital(1_000.0), {}),
    # REDUCING from the drawdown, then denials while flat
    ("drawdown reduce", _tight(10_000.0, 0.004, 0.002, 0.004), {}),
    # HALTED by the daily loss stop, lifted each new day (11 state changes), soft-drawdown halving
    ("daily loss halts", _tight(10_000.0, 0.002, 0.0005, 0.03), {}),
    ("chaos", EngineConfig.for_capital(10_000.0), {"chaos": 0.25}),
    ("partial fills", EngineConfig.for_capital(10_000.0), {"participation": 2e-5}),
    ("batch model", EngineConfig.for_capital(10_000.0, entry_threshold=0.01), {"model": TiltRows()}),
    ("no sizing, no flatten", EngineConfig.for_capital(10_000.0, sizing=None, flatten_before_close_s=0), {}),
])
def test_replay_equals_on_bar_loop(bars, name, cfg, kw):
    a, b = _both(bars, cfg, **kw)
    _assert_same(a, b)
    assert a.stats().trades > 0  # the setting trades, so the comparison means something
    denials = a.governor.denials
    if name == "drawdown reduce":
        assert a.governor_state.trading_state == gov.REDUCING and denials[gov.Reason.TRADING_REDUCING.value] > 0
    if name == "daily loss halts":
        assert a.governor.state_changes >= 4 and denials[gov.Reason.DAILY_LOSS_LIMIT.value] > 0
        assert denials[gov.Reason.DRAWDOWN_SOFT.value] > 0


def test_replay_two_loops(bars):
    a, b = _both(bars.slice(0, 900), EngineConfig.for_capital(10_000.0), loops=2)
    _assert_same(a, b)


def test_replay_in_pieces_across_a_loop_boundary(bars):
    short = bars.slice(0, 900)
    a, b = _both(short, EngineConfig.for_capital(10_000.0), loops=3)
    c = _engine(short, EngineConfig.for_capital(10_000.0))
    for lo, hi in ((0, 500), (500, 1300), (1300, 2700)):
        assert replay.run(c, short, hi, start=lo) == hi - lo
    _assert_same(a, c)


def test_replay_skips_bad_bars_like_on_bar(bars):
    close = bars.close.copy()
    high = bars.high.copy()
    close[[100, 101, 500]] = np.nan
    high[800] = -1.0
    bad = dataclasses.replace(bars, close=close, high=high)
    a, b = _both(bad, EngineConfig.for_capital(10_000.0), impact_bars=bars)
    _assert_same(a, b)
    assert math.isfinite(a.stats().pnl_usd) and a.stats().trades > 0


def test_replay_continues_an_on_bar_run_and_on_bar_continues_it(bars):
    cfg = EngineConfig.for_capital(10_000.0)
    a = _engine(bars, cfg)
    for bar in bars:
        a.on_bar(bar)
    b = _engine(bars, cfg)
    head, mid, tail = bars.slice(0, 700), bars.slice(700, 1600), bars.slice(1600, None)
    for bar in head:
        b.on_bar(bar)
    replay.run(b, mid)
    for bar in tail:  # the primed feature window must carry on exactly
        b.on_bar(bar)
    _assert_same(a, b)


def test_replay_rejects_empty_input(bars):
    with pytest.raises(ValueError):
        replay.run(_engine(bars, EngineConfig.for_capital(10_000.0)), bars.slice(0, 0))
    with pytest.raises(ValueError):
        replay.run(_engine(bars, EngineConfig.for_capital(10_000.0)), bars, 10, start=10)


# -- the vectorised pieces against their per-bar forms -----------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ns(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1) * 1000


def test_session_phases_equal_phase_bar_by_bar(bars):
    # real bars, plus every minute around the 2024-2027 early closes and DST switches, plus a holiday
    times = [b.ts + timedelta(minutes=1) for b in bars]
    for s in sess.early_closes(datetime(2024, 1, 1).date(), datetime(2027, 12, 31).date()):
        times += [s.close + timedelta(minutes=k) for k in range(-10, 3)]
        times += [s.open + timedelta(minutes=k) for k in range(-2, 3)]
    for d in ("2024-03-08", "2024-03-11", "2024-11-01", "2024-11-04", "2027-03-15", "2025-12-25"):
        base = datetime.fromisoformat(d + "T00:00:00+00:00")
        times += [base + timedelta(minutes=13 * k) for k in range(110)]
    for lead in (sess.FLATTEN_LEAD_S, 0.0):
        clock = sess.SessionClock(lead)
        phase, open_ns = clock.phases(np.array([_ns(t) for t in times], dtype="int64"))
        for t, ph, o in zip(times, phase.tolist(), open_ns.tolist()):
            s = clock.session(t)
            assert ph == clock.phase(t), t
            assert o == (sess.NO_SESSION if s is None else _ns(s.open)), t


def test_sizer_update_run_equals_update(bars):
    from quantramp.trader.sizing import AtrSizer

    clock = sess.SessionClock()
    fill = [b.ts + timedelta(minutes=1) for b in bars]
    a = AtrSizer()
    for b, f in zip(bars, fill):
        s = clock.session(f)
        a.update(b.ts, b.high, b.low, b.close, None if s is None else s.open)
    _, open_ns = clock.phases(np.array([_ns(f) for f in fill], dtype="int64"))
    b_ = AtrSizer()
    ts_ns = np.array([_ns(b.ts) for b in bars], dtype="int64")
    b_.update_run(ts_ns, bars.high, bars.low, bars.close, open_ns)
    assert a.state.to_dict() == b_.state.to_dict()
    assert a.switches > 0
