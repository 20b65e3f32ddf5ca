"""5-minute bars (bar_seconds 300), resampled from the bundled AAPL minute sample.

check_spacing, costs per session, the end-of-day flatten (decided on the 15:50 bar, filled at
15:55), the batch replay against the bar-by-bar path, and the backtest CLI with --bar-seconds 300.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quantramp.trader import backtest, barsource
from quantramp.trader import session as sess
from quantramp.trader.broker import CausalImpact
from quantramp.trader.engine import EngineConfig
from quantramp.trader.marketdata import MarketDataError, load_minute_bars, resample
from support.replay_equivalence import assert_same_run, batch_and_steps
from test_trader_engine_orders import Tilt  # the deterministic stub model

FIVE = 300


@pytest.fixture(scope="module")
def minute():
    return load_minute_bars("AAPL")


@pytest.fixture(scope="module")
def five(minute):
    return resample(minute, FIVE)


def test_resample_and_check_spacing(minute, five):
    assert len(five) == 6 * 78  # 390 minutes / 5 per session
    assert five.volume.sum() == pytest.approx(minute.volume.sum(), rel=1e-12)
    assert five.open[0] == minute.open[0] and five.close[0] == minute.close[4]
    assert five.high[0] == pytest.approx(minute.high[:5].max()) and five.low[0] == pytest.approx(minute.low[:5].min())
    assert barsource.check_spacing(five, FIVE, "5m") is five
    with pytest.raises(MarketDataError, match="300 s apart"):
        barsource.check_spacing(five, 60, "5m")
    with pytest.raises(MarketDataError, match="60 s apart"):
        barsource.check_spacing(minute, FIVE, "1m")
    with pytest.raises(MarketDataError, match="not a whole multiple"):
        resample(five, 420)


def test_costs_scale_with_the_bar(five):
    imp = CausalImpact(bar_seconds=FIVE)
    assert imp.bars_per_session == pytest.approx(78)
    ts = five.ts.astype("int64").tolist()
    for t, c, v in zip(ts, five.close.tolist(), five.volume.tolist()):
        imp.update(t, c, v)
    assert imp.n_returns == len(five) - 6  # every return but the 5 overnight gaps and the first bar
    per_bar = np.diff(np.log(five.close))[np.diff(five.ts) == np.timedelta64(FIVE, "s")]
    assert imp.sigma_daily == pytest.approx(float(np.sqrt(np.mean(per_bar ** 2) * 78)), rel=0.6)
    assert 0.3 < imp.adv_shares / (five.volume.sum() / 6) < 3.0  # a day's volume, not 5 minutes'


def test_a_five_minute_run_flattens_before_every_close(five):
    cfg = EngineConfig.for_capital(100_000.0, bar_seconds=FIVE)
    eng = backtest.make_engine(Tilt(), cfg, five, seed=0)
    days = pd.DatetimeIndex(five.ts).tz_localize("UTC").tz_convert("America/New_York").date
    held_intraday, last_of_day, closing_at = 0, [], []
    for i, bar in enumerate(five):
        r = eng.on_bar(bar)
        held_intraday += eng.live.position != 0
        if r.closing:
            closing_at.append(bar.ts.astimezone(sess.NEW_YORK).strftime("%H:%M"))
        if i + 1 == len(five) or days[i + 1] != days[i]:
            last_of_day.append(eng.live.position)
    assert held_intraday > 50 and eng.stats().trades > 10
    assert last_of_day == [0] * 6  # flat at every session's last bar (15:55-16:00)
    assert "15:50" in closing_at  # decided on the 15:50 bar's close, filled at 15:55 = close - 5 min
    assert eng.stats().hard_limit_breaches == 0


def test_batch_replay_equals_the_bar_by_bar_path_on_five_minute_bars(five):
    cfg = EngineConfig.for_capital(100_000.0, bar_seconds=FIVE)
    assert_same_run(*batch_and_steps(Tilt(), cfg, five, seed=5))


def test_backtest_cli_on_five_minute_aapl(monkeypatch):
    import quantramp.trader.model as model_mod
    from quantramp.trader.cli import app

    monkeypatch.setattr(model_mod, "load_model", lambda uri, tracking=None: Tilt())
    r = CliRunner().invoke(app, ["backtest", "--model-uri", "models:/m/1", "--capital-usd", "100000",
                                 "--bar-seconds", "300"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["bars"] == 6 * 78 and out["bar_seconds"] == FIVE and out["trades"] > 0
    assert math.isfinite(out["pnl_usd"]) and out["hard_limit_breaches"] == 0 and out["position_qty"] == 0
