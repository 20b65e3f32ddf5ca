"""The governor's time-dependent limits scale with the bar length (governor.bar_length_defaults): the price
collar (2 % x sqrt(bar / 1 min), at most 10 %) and the max price age (1.5 bars; daily 4 h after the close).
Minute bars keep the figures they always had; a daily strategy is no longer denied its entries after every
day that moved 2 %; a value given in the environment wins."""

from __future__ import annotations

import math

import pytest

from quantramp.trader import backtest
from quantramp.trader import governor as gov
from quantramp.trader.engine import EngineConfig
from quantramp.trader.server import TraderSettings
from support.stock_bars import daily_bars
from test_trader_engine_orders import Tilt

ENV = {"QR_STRATEGY": "s", "QR_ROLE": "champion", "QR_MODEL_URI": "models:/m/1", "MLFLOW_TRACKING_URI": "http://x",
       "QR_CAPITAL_USD": "100000", "QR_BARS_SOURCE": "file", "QR_BARS_URL": "/data/{symbol}.csv"}


@pytest.mark.parametrize("bar_seconds, collar, age", [
    (60, 0.02, 90.0), (300, 0.02 * math.sqrt(5), 450.0), (900, 0.02 * math.sqrt(15), 1350.0),
    (1800, 0.10, 2700.0), (3600, 0.10, 5400.0), (86400, 0.10, 4 * 3600.0),
])
def test_the_defaults_per_bar_length(bar_seconds, collar, age):
    d = gov.bar_length_defaults(bar_seconds)
    assert d["price_collar_ratio"] == pytest.approx(collar, rel=1e-12)
    assert d["max_price_age_s"] == pytest.approx(age, rel=1e-12)


def test_minute_bars_keep_the_historical_defaults():
    assert gov.bar_length_defaults(60) == {"price_collar_ratio": gov.DEFAULT_PRICE_COLLAR_RATIO,
                                           "max_price_age_s": gov.DEFAULT_MAX_PRICE_AGE_S}
    with pytest.raises(ValueError, match="bar_seconds must be > 0"):
        gov.bar_length_defaults(0)


def test_the_pod_settings_scale_them_and_a_given_value_wins():
    daily = TraderSettings.from_env({**ENV, "QR_BAR_SECONDS": "86400"})
    assert daily.limits.price_collar_ratio == pytest.approx(0.10) and daily.limits.max_price_age_s == 14400.0
    # a live allocation re-derives the limits at the new capital: still scaled
    live = daily.limits_at(50_000.0, 25_000.0, 50_000.0, 1_000.0)
    assert live.price_collar_ratio == pytest.approx(0.10) and live.max_price_age_s == 14400.0
    given = TraderSettings.from_env({**ENV, "QR_BAR_SECONDS": "86400", "QR_PRICE_COLLAR_RATIO": "0.03",
                                     "QR_MAX_PRICE_AGE_SECONDS": "600"})
    assert given.limits.price_collar_ratio == pytest.approx(0.03) and given.limits.max_price_age_s == 600.0
    minute = TraderSettings.from_env(ENV)
    assert minute.limits.price_collar_ratio == pytest.approx(0.02) and minute.limits.max_price_age_s == 90.0


def _collar_denials(cfg: EngineConfig) -> int:
    bars = daily_bars("MSFT")
    eng = backtest.make_engine(Tilt(), cfg, bars, seed=0)
    for bar in bars:
        eng.on_bar(bar)
    return eng.stats().governor_denials.get(gov.Reason.PRICE_COLLAR.value, 0)


def test_a_daily_strategy_is_not_denied_its_entries_by_a_minute_collar():
    """MSFT 2010-2013 daily: the minute bars' 2 % collar denies entries after big days; the daily default does not."""
    scaled = EngineConfig.for_capital(100_000.0, symbol="MSFT", bar_seconds=86400)
    assert scaled.limits.price_collar_ratio == pytest.approx(0.10)
    minute_collar = EngineConfig(capital_usd=100_000.0, limits=gov.RiskLimits(
        max_order_usd=scaled.limits.max_order_usd, max_position_usd=scaled.limits.max_position_usd,
        max_daily_loss_usd=scaled.limits.max_daily_loss_usd), symbol="MSFT", bar_seconds=86400)
    before = _collar_denials(minute_collar)
    after = _collar_denials(scaled)
    print(f"\ncollar denials on MSFT daily 2010-2013: 2 % collar {before}, daily default {after}")
    assert before > 0 and after < before
