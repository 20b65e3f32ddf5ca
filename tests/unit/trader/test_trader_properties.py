"""Properties of the governed engine for any bars and model outputs (Hypothesis).

* no accepted order breaches any limit (a reduce-only order only the ones meant for it);
* REDUCING never grows |position|; HALTED accepts only flattening orders;
* nothing is ever traded on a NaN / non-positive or stale price;
* the fill audit never finds a hard-limit breach.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantramp.trader.broker import ImpactModel, SimBroker
from quantramp.trader.engine import BAR_INTERVAL, Engine, EngineConfig
from quantramp.trader.governor import ACTIVE, HALTED, REDUCING, Governor, RiskLimits
from quantramp.trader.marketdata import Bar
from quantramp.trader.sizing import SizingConfig

SETTINGS = settings(max_examples=int(__import__("os").environ.get("QR_HYP_EXAMPLES", "200")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
START = datetime(2026, 7, 29, 14, 0, tzinfo=timezone.utc)  # 10:00 New York, a session
LIMITS = RiskLimits(
    max_order_usd=1_500.0,
    max_position_usd=3_000.0,
    max_daily_loss_usd=60.0,
    max_gross_position_usd=2_500.0,
    max_daily_turnover_usd=12_000.0,
    drawdown_soft_usd=30.0,
    drawdown_reduce_usd=50.0,
    drawdown_halt_usd=90.0,
    price_collar_ratio=0.03,
    max_orders_per_window=3,
    throttle_window_s=300.0,
)
EPS = 1e-9


class Script:
    def __init__(self, ps):
        self.ps = ps
        self.i = 0

    def p_up_one(self, x):
        p = self.ps[self.i % len(self.ps)]
        self.i += 1
        return p


bar_step = st.tuples(
    st.floats(-0.025, 0.025),  # return of the close
    st.sampled_from(["ok"] * 12 + ["nan", "zero", "stale", "gap"]),
    st.floats(0.0, 1.0),  # model output
)


def make_bars(steps):
    bars, ps = [], []
    price, ts, newest = 100.0, START, START
    for r, kind, p in steps:
        price = round(max(1.0, price * (1 + r)), 2)
        if kind == "stale":
            t = newest - timedelta(minutes=3)  # a late bar, older than the price age allows
        elif kind == "gap":
            ts = newest + timedelta(minutes=5)
            t = ts
        else:
            ts = newest + BAR_INTERVAL
            t = ts
        newest = max(newest, t)
        o = round(price * (1 - r / 3), 2)
        c = price
        if kind == "nan":
            c = float("nan")
        elif kind == "zero":
            o = 0.0
        hi = max(o, c) + 0.05 if math.isfinite(c) else float("nan")
        lo = min(o, c) - 0.05 if math.isfinite(c) else float("nan")
        bars.append(Bar(t, o, hi, lo, c, 5e5))
        ps.append(p)
    return bars, ps


@SETTINGS
@given(st.lists(bar_step, min_size=40, max_size=160), st.booleans())
def test_no_accepted_order_breaches_any_limit(steps, paper):
    bars, ps = make_bars(steps)
    impact = ImpactModel(sigma_daily=0.02, adv_shares=5e7)
    cfg = EngineConfig(
        capital_usd=2_000.0, limits=LIMITS, entry_threshold=0.05, paper=paper,
        sizing=SizingConfig(risk_fraction=0.05, period=5, min_intraday_bars=2),
    )
    eng = Engine(cfg, Script(ps), SimBroker(impact, seed=len(steps)), impact)
    lim = eng.limits
    newest_close = None
    for bar in bars:
        close_ts = bar.ts + BAR_INTERVAL
        stale = newest_close is not None and (newest_close - close_ts).total_seconds() > lim.max_price_age_s
        newest_close = close_ts if newest_close is None else max(newest_close, close_ts)
        bad = not all(math.isfinite(v) and v > 0 for v in (bar.open, bar.high, bar.low, bar.close))
        step = eng.on_bar(bar)
        q = step.order_qty
        if not q:
            continue
        # never on a NaN / non-positive or stale price
        assert not bad and not stale
        price = bar.close
        pos = step.target - q
        new = step.target
        gs = eng.governor_state
        grows = abs(new) > abs(pos) or (new != 0 and pos != 0 and (new > 0) != (pos > 0))
        if grows:
            assert abs(q) * price <= lim.max_order_usd + EPS
            assert step.verdict.state == ACTIVE
            assert abs(new) * price <= lim.max_position_usd + EPS
            assert abs(new) * price <= lim.max_gross_position_usd + EPS
            assert abs(new) * price <= lim.capital_usd * lim.max_capital_fraction + EPS
            assert gs.turnover_usd + abs(q) * price <= lim.max_daily_turnover_usd + EPS
            assert gs.day_pnl_usd > -lim.max_daily_loss_usd
            assert gs.drawdown_usd < lim.drawdown_reduce_usd
        else:  # reduce-only: exempt from the order cap (review D5), bounded by the position
            assert abs(q) <= abs(pos) and abs(new) < abs(pos) and (new == 0 or (new > 0) == (pos > 0))
        if step.verdict.state == REDUCING:
            assert abs(new) < abs(pos) and (new == 0 or (new > 0) == (pos > 0))
        if step.verdict.state == HALTED:
            assert step.closing and abs(new) < abs(pos) and (new == 0 or (new > 0) == (pos > 0))
    assert eng.governor.hard_limit_breaches == 0
    s = eng.stats()
    assert s.hard_limit_breaches == 0 and s.trading_state in (ACTIVE, REDUCING, HALTED)


request = st.tuples(
    st.integers(-60, 60),  # target
    st.floats(20.0, 200.0),  # price
    st.floats(-0.05, 0.05),  # last trade vs price
    st.integers(0, 120),  # seconds since the previous request
    st.integers(0, 200),  # price age, seconds
    st.floats(-150.0, 60.0),  # equity change
    st.sampled_from(["AAPL", "AAPL", "MSFT"]),
    st.sampled_from(["none", "none", "none", "halt", "reduce", "resume", "day"]),
)


@SETTINGS
@given(st.lists(request, min_size=1, max_size=120))
def test_governor_alone_never_accepts_a_breach(reqs):
    g = Governor(LIMITS.resolved(2_000.0))
    lim = g.limits
    pos = {"AAPL": 0, "MSFT": 0}
    price_of = {"AAPL": 100.0, "MSFT": 100.0}
    now = 10**18
    equity = 2_000.0
    day = 0
    accepted_times: list[int] = []
    for target, price, dl, dt, age, d_eq, sym, op in reqs:
        now += dt * 10**9
        equity += d_eq
        if op == "halt":
            g.halt()
        elif op == "reduce":
            g.reduce_only()
        elif op == "resume":
            g.resume()
        elif op == "day":
            day += 1
            g.new_day(f"d{day}")
        g.mark(sym, pos[sym], price, equity, equity - 2_000.0)
        price_of[sym] = price
        state = g.state.trading_state
        turnover = g.state.turnover_usd
        p = pos[sym]
        v = g.check(sym, target, p, price, price * (1 + dl), now, now - age * 10**9)
        q = v.order_qty
        assert v.state == state
        if not q:
            assert v.denied == (target != p)
            continue
        new = p + q
        assert age <= lim.max_price_age_s
        assert abs(q) <= abs(target - p) and (q > 0) == (target > p)
        grows = abs(new) > abs(p) or (new != 0 and p != 0 and (new > 0) != (p > 0))
        recent = [t for t in accepted_times if t > now - lim.throttle_window_s * 10**9]
        if grows:  # collar, order cap and throttle act on orders that add risk (review D5)
            assert abs(dl) * price <= lim.price_collar_ratio * price * (1 + dl) + EPS
            assert abs(q) * price <= lim.max_order_usd + EPS
            assert len(recent) < lim.max_orders_per_window
            other = sum(abs(pos[s] * price_of[s]) for s in pos if s != sym)
            assert state == ACTIVE
            assert abs(new) * price <= lim.max_position_usd + EPS
            assert other + abs(new) * price <= min(lim.max_gross_position_usd, lim.capital_usd) + EPS
            assert turnover + abs(q) * price <= lim.max_daily_turnover_usd + EPS
        else:  # reduce-only: toward flat, never through it
            assert (new == 0 or (new > 0) == (p > 0)) and abs(new) < abs(p)
        if state == REDUCING:
            assert not grows
        if state == HALTED:
            assert target == 0 and not grows
        accepted_times.append(now)
        g.on_fill(sym, q, price, p, q)
        pos[sym] = new
    assert g.hard_limit_breaches == 0
