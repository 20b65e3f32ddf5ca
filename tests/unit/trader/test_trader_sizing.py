"""ATR sizing: Wilder ATR, intraday ATR near the open, the logged switch, the size."""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta, timezone

import pytest

from quantramp.trader.sizing import INTRADAY, REGULAR, AtrSizer, AtrState, SizingConfig

OPEN1 = datetime(2026, 7, 29, 13, 30, tzinfo=timezone.utc)
OPEN2 = datetime(2026, 7, 30, 13, 30, tzinfo=timezone.utc)


def feed(sizer, open_, n, rng=1.0, close=100.0, start=0):
    for i in range(start, start + n):
        sizer.update(open_ + timedelta(minutes=i), close + rng / 2, close - rng / 2, close, open_)


def test_wilder_atr_matches_a_direct_computation():
    s = AtrSizer(SizingConfig(period=3))
    highs = [10.0, 11.0, 12.0, 11.5, 13.0]
    lows = [9.0, 10.0, 10.5, 10.0, 11.0]
    closes = [9.5, 10.5, 11.5, 10.5, 12.5]
    for i, (h, lo, c) in enumerate(zip(highs, lows, closes)):
        s.update(OPEN1 + timedelta(minutes=i), h, lo, c, OPEN1)
        if i < 2:
            assert math.isnan(s.regular_atr)
    trs = [1.0, max(1.0, 1.5, 0.5), max(1.5, 1.5, 0.0), max(1.5, 0.0, 1.5), max(2.0, 2.5, 0.5)]
    atr = sum(trs[:3]) / 3
    for tr in trs[3:]:
        atr += (tr - atr) / 3
    assert s.regular_atr == pytest.approx(atr)


def test_intraday_atr_near_the_open_regular_otherwise_and_every_switch_is_logged(caplog):
    cfg = SizingConfig(period=5, intraday_window_s=1800, min_intraday_bars=3)
    s = AtrSizer(cfg)
    caplog.set_level(logging.INFO, logger="quantramp.trader.sizing")
    feed(s, OPEN1, 2, rng=1.0)
    assert s.source == REGULAR  # fewer than 3 bars of today
    feed(s, OPEN1, 28, rng=1.0, start=2)
    assert s.source == INTRADAY and s.atr == pytest.approx(s.intraday_atr)
    feed(s, OPEN1, 10, rng=1.0, start=30)  # 30 minutes after the open
    assert s.source == REGULAR and s.atr == pytest.approx(s.regular_atr)
    # next day opens 5 USD higher on wide bars: the regular ATR carries the gap, the intraday one not
    feed(s, OPEN2, 5, rng=0.5, close=105.0)
    assert s.source == INTRADAY
    assert s.intraday_atr == pytest.approx(0.5)
    assert s.regular_atr > 0.6  # still carries the 5 USD overnight gap
    assert s.switches == 3
    msgs = [r.getMessage() for r in caplog.records if r.name == "quantramp.trader.sizing"]
    assert len(msgs) == 3 and "regular -> intraday" in msgs[0] and "intraday -> regular" in msgs[1]


def test_size_is_the_atr_risk_budget_capped_by_the_position_limit():
    s = AtrSizer(SizingConfig(risk_fraction=0.002, atr_multiple=2.0, period=3, min_intraday_bars=1))
    assert s.shares(10_000.0, 100.0, 5_000.0) == 0  # no ATR yet: no size
    feed(s, OPEN1, 40, rng=0.1)
    # 0.002 * 10,000 / (2 * 0.1) = 100 shares, cap 5,000 / 100 = 50
    assert s.shares(10_000.0, 100.0, 5_000.0) == 50
    feed(s, OPEN1, 40, rng=1.0, start=40)
    assert s.atr == pytest.approx(1.0)
    assert s.shares(10_000.0, 100.0, 5_000.0) == 10  # 20 / 2
    assert s.shares(10_000.0, float("nan"), 5_000.0) == 0
    assert s.shares(10_000.0, 100.0, 50.0) == 0  # the cap is less than a share


def test_bad_bar_leaves_the_atr_alone():
    s = AtrSizer(SizingConfig(period=2))
    feed(s, OPEN1, 5, rng=1.0)
    before = s.state.to_dict()
    s.update(OPEN1 + timedelta(minutes=5), float("nan"), 99.0, 100.0, OPEN1)
    s.update(OPEN1 + timedelta(minutes=6), 99.0, 101.0, 100.0, OPEN1)  # high < low
    assert s.state.to_dict() == before


def test_state_round_trips():
    s = AtrSizer()
    feed(s, OPEN1, 20, rng=0.5)
    d = json.loads(json.dumps(s.state.to_dict()))
    assert AtrState.from_dict(d) == s.state
    assert AtrState.from_dict(AtrState().to_dict()).n == 0


def test_config_validation_and_env():
    with pytest.raises(ValueError):
        SizingConfig(risk_fraction=0)
    with pytest.raises(ValueError):
        SizingConfig(period=0)
    cfg = SizingConfig.from_env({"QR_SIZING_RISK_FRACTION": "0.01", "QR_INTRADAY_ATR_MINUTES": "15"})
    assert cfg.risk_fraction == 0.01 and cfg.intraday_window_s == 900.0 and cfg.period == 14
    with pytest.raises(ValueError, match="QR_ATR_PERIOD"):
        SizingConfig.from_env({"QR_ATR_PERIOD": "x"})
