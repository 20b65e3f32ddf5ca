"""Causal costs (issue 12, review D14): spread + square-root impact from past bars only."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from quantramp.trader import replay
from quantramp.trader.backtest import make_engine
from quantramp.trader.broker import CausalImpact
from quantramp.trader.engine import EngineConfig
from quantramp.trader.marketdata import load_minute_bars

MIN_NS = 60 * 10**9


def test_causal_impact_by_hand():
    c = CausalImpact(bar_seconds=60, min_returns=2)
    assert c.bps(10) == 0.0 and c.sigma_daily == 0.02  # nothing seen: no spread, no ADV, the prior
    c.update(0, 100.0, 1_000.0)
    c.update(MIN_NS, 101.0, 3_000.0)
    assert c.sigma_daily == 0.02  # one return < min_returns
    c.update(2 * MIN_NS, 100.0, 2_000.0)
    a = 0.5 ** (1 / 390)  # half-life one session of 390 minute bars
    r1, r2 = math.log(101 / 100), math.log(100 / 101)
    msr = a * r1 * r1 + (1 - a) * r2 * r2
    vol = a * (a * 1_000 + (1 - a) * 3_000) + (1 - a) * 2_000
    sigma = math.sqrt(msr * 390)
    assert c.sigma_daily == pytest.approx(sigma, rel=1e-12)
    assert c.adv_shares == pytest.approx(vol * 390, rel=1e-12)
    half_spread = 0.5 * 0.01 / 100.0 * 1e4  # 0.5 bps at $100
    assert c.bps(500) == pytest.approx(half_spread + sigma * math.sqrt(500 / (vol * 390)) * 1e4, rel=1e-12)
    c.update(2 * MIN_NS + 30 * MIN_NS, 150.0, 2_000.0)  # a 30-minute gap: its return is left out
    assert c.n_returns == 2


def test_state_round_trips():
    c = CausalImpact(bar_seconds=300)
    for i in range(50):
        c.update(i * 5 * MIN_NS, 100.0 + 0.1 * (i % 7), 1e4 + i)
    d = json.loads(json.dumps(c.to_dict()))
    c2 = CausalImpact()
    c2.load(d)
    assert c2 == c


@pytest.fixture(scope="module")
def aapl():
    return load_minute_bars("AAPL")


class Momentum:
    def p_up_one(self, x):
        return 0.9 if x[0] > 0 else 0.1


def test_costs_of_past_fills_do_not_depend_on_future_bars(aapl):
    """The review's look-ahead: impact was estimated once on the whole sample, future bars included."""
    n = 800
    costs = []
    for vol_scale in (1.0, 50.0):
        vol = np.array(aapl.volume, dtype=float)
        vol[n:] *= vol_scale
        bars = replace(aapl, volume=vol)
        eng = make_engine(Momentum(), EngineConfig.for_capital(10_000.0), bars, seed=3)
        seen = []
        for i, b in enumerate(bars):
            if i >= n:
                break
            r = eng.on_bar(b)
            if r.sim_fill is not None:
                seen.append(r.sim_fill.modeled_slippage_bps)
        costs.append(seen)
    assert costs[0] and costs[0] == costs[1]


def test_replay_equals_on_bar_loop_with_causal_costs(aapl):
    cfg = EngineConfig.for_capital(10_000.0)
    a = make_engine(Momentum(), cfg, aapl, seed=5)
    b = make_engine(Momentum(), cfg, aapl, seed=5)
    for bar in aapl:
        a.on_bar(bar)
    replay.run(b, aapl)
    sa, sb = a.snapshot(), b.snapshot()
    assert sa["impact"] == sb["impact"] and sa["impact"]["n_returns"] > 1000
    assert json.dumps(sa, sort_keys=True, default=str) == json.dumps(sb, sort_keys=True, default=str)
    assert a.stats().slippage_modeled_bps > 0.1  # the half spread alone is ~0.2 bps on AAPL
