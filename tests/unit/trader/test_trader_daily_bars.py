"""Daily bars (bar_seconds 86400: one bar per XNYS session, stamped at the session open).

Loader stamping and refusals, check_spacing, the engine's next-session fills and overnight
holds, day P&L per session, impact / sizing / jump bound on real daily data (bokeh-sampledata
MSFT, GOOG 2010-2013), the batch replay against the bar-by-bar path, and the backtest CLI on
a CSV of dates. Each control is also shown switched off, so the tests can fail.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from quantramp.trader import backtest, barsource
from quantramp.trader import governor as gov
from quantramp.trader import session as sess
from quantramp.trader.barcheck import DEFAULT_MAX_JUMP_RATIO, PRICE_JUMP, BarCheck, max_jump_ratio_for
from quantramp.trader.broker import CausalImpact, ImpactModel, SimBroker, estimate_impact_model
from quantramp.trader.engine import Engine, EngineConfig
from quantramp.trader.marketdata import Bars, MarketDataError, load_minute_bars, parse_frame, resample
from quantramp.trader.sizing import REGULAR, AtrSizer
from support.replay_equivalence import assert_same_run, batch_and_steps
from support.stock_bars import daily_bars, daily_frame, write_csv
from test_trader_engine_orders import Tilt  # the deterministic stub model

DAILY = sess.DAILY_BAR_SECONDS


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=timezone.utc)


def _frame(days, closes=None, opens=None):
    """A daily frame of ``days`` (YYYY-MM-DD) with made-up prices around 100 USD (open = close
    unless ``opens`` are given)."""
    closes = closes or [100.0 + i for i in range(len(days))]
    opens = opens or closes
    return pd.DataFrame({
        "datetime": days, "open": opens, "high": [max(o, c) + 1 for o, c in zip(opens, closes)],
        "low": [min(o, c) - 1 for o, c in zip(opens, closes)], "close": closes, "volume": [1e6] * len(days),
    })


@pytest.fixture(scope="module")
def msft():
    return daily_bars("MSFT")


# -- loader ---------------------------------------------------------------------------------------
def test_dates_are_stamped_at_the_session_open_across_dst_and_an_early_close():
    # Fri 2012-03-09 (EST), Mon 03-12 (EDT, after the 03-11 switch), Fri 2012-11-23 (13:00 close)
    bars = parse_frame(_frame(["2012-03-09", "2012-03-12", "2012-11-21", "2012-11-23", "2012-11-26"]), "X")
    ts = [pd.Timestamp(t).tz_localize("UTC") for t in bars.ts]
    assert ts == [pd.Timestamp(x) for x in ("2012-03-09 14:30Z", "2012-03-12 13:30Z", "2012-11-21 14:30Z",
                                            "2012-11-23 14:30Z", "2012-11-26 14:30Z")]
    for t in ts:  # 09:30 New York every time
        ny = t.tz_convert("America/New_York")
        assert (ny.hour, ny.minute) == (9, 30)
    # the early close: the bar's price time is 13:00 New York (18:00 UTC), its fill the next session's open
    early = ts[3].to_pydatetime()
    assert sess.price_time(early, DAILY) == utc(2012, 11, 23, 18, 0)
    assert sess.fill_time(ts[2].to_pydatetime(), DAILY) == early  # Wed -> Fri over Thanksgiving


def test_intraday_frames_are_not_stamped():
    minute = load_minute_bars("AAPL")
    assert pd.Timestamp(minute.ts[0]) == pd.Timestamp("2026-07-29 13:30")  # 09:30 EDT, as before
    f = _frame(["2026-07-29T13:30:00Z", "2026-07-29T13:31:00Z"])
    assert list(parse_frame(f, "X").ts) == list(np.array(["2026-07-29T13:30", "2026-07-29T13:31"], dtype="datetime64[ns]"))
    # one bar with a time of day: the whole frame is intraday (nothing is moved)
    f = _frame(["2026-07-29T00:00:00Z", "2026-07-29T13:31:00Z"])
    assert pd.Timestamp(parse_frame(f, "X").ts[0]) == pd.Timestamp("2026-07-29 00:00")


@pytest.mark.parametrize("day", ["2012-11-22", "2012-11-24", "1999-12-31"], ids=["holiday", "saturday", "out_of_range"])
def test_a_date_that_is_not_a_session_is_refused_by_name(day):
    with pytest.raises(MarketDataError, match=day):
        parse_frame(_frame(["2012-11-21", day, "2012-11-26"] if day > "2000" else [day, "2012-11-21"]), "X")


def test_the_refusal_is_the_calendar_lookup(monkeypatch):
    """Control off: a calendar that calls every date a session lets Thanksgiving through."""
    frame = _frame(["2012-11-21", "2012-11-22", "2012-11-23"])
    with pytest.raises(MarketDataError, match="2012-11-22"):
        parse_frame(frame, "X")
    fake = sess.Session(date(2012, 11, 22), utc(2012, 11, 22, 14, 30), utc(2012, 11, 22, 21, 0))
    real = sess.XNYS.session_for
    monkeypatch.setattr(sess.XNYS, "session_for", lambda d: real(d) or fake)
    assert len(parse_frame(frame, "X")) == 3


# -- check_spacing ------------------------------------------------------------------------------------
def test_check_spacing_accepts_real_daily_bars(msft):
    assert len(msft) == 795  # 2010-01-04 .. 2013-03-01, every XNYS session
    assert barsource.check_spacing(msft, DAILY, "msft") is msft
    # what the seconds rule sees: not one spacing (weekends 3 days, DST Mondays 23 h / 25 h)
    gaps = set((np.diff(msft.ts) / np.timedelta64(1, "s")).astype(int).tolist())
    assert {86_400, 3 * 86_400, 3 * 86_400 - 3_600, 3 * 86_400 + 3_600} <= gaps
    with pytest.raises(MarketDataError, match="86400 s apart"):
        barsource.check_spacing(msft, 60, "msft")
    with pytest.raises(MarketDataError):
        barsource.check_spacing(msft, 300, "msft")


def test_check_spacing_daily_on_a_short_series_over_a_weekend_and_a_holiday(monkeypatch):
    bars = parse_frame(_frame(["2012-11-21", "2012-11-23", "2012-11-26"]), "X")  # Wed, Fri (early close), Mon
    assert barsource.check_spacing(bars, DAILY, "x") is bars
    # control off: the modal-seconds rule (no gap here is 86400 s) refuses consecutive sessions
    monkeypatch.setattr(barsource, "is_daily", lambda s: False)
    with pytest.raises(MarketDataError, match="172800 s apart"):
        barsource.check_spacing(bars, DAILY, "x")


def test_check_spacing_daily_refuses_what_is_not_one_bar_per_session(msft):
    with pytest.raises(MarketDataError, match="not a session open"):  # minute bars
        barsource.check_spacing(load_minute_bars("AAPL"), DAILY, "m")
    midnight = Bars("X", msft.ts.astype("datetime64[D]").astype("datetime64[ns]"), msft.open, msft.high, msft.low,
                    msft.close, msft.volume)
    with pytest.raises(MarketDataError, match="not a session open"):  # dates not stamped
        barsource.check_spacing(midnight, DAILY, "m")
    with pytest.raises(MarketDataError, match="2 sessions apart"):  # every other session
        every_other = Bars("X", *(a[::2] for a in (msft.ts, msft.open, msft.high, msft.low, msft.close, msft.volume)))
        barsource.check_spacing(every_other, DAILY, "m")


def test_resample_to_daily_stamps_session_opens():
    d = resample(load_minute_bars("AAPL"), DAILY)
    assert len(d) == 6 and barsource.check_spacing(d, DAILY, "d") is d
    assert pd.Timestamp(d.ts[0]) == pd.Timestamp("2026-07-29 13:30")


# -- engine on daily bars -------------------------------------------------------------------------
def _engine(daily=True, max_daily_loss=10_000.0):
    impact = ImpactModel(sigma_daily=0.0, adv_shares=1e12)
    limits = gov.RiskLimits(max_order_usd=50_000.0, max_position_usd=20_000.0, max_daily_loss_usd=max_daily_loss,
                            price_collar_ratio=0.5)
    cfg = EngineConfig(capital_usd=100_000.0, limits=limits, sizing=None, bar_seconds=DAILY if daily else 60)
    return Engine(cfg, Tilt(), SimBroker(impact, seed=0, noise_sigma=0.0), impact)


def _bars(eng, days, closes, opens=None):
    """The bars of ``days`` after a first bar on Tue 2012-11-20 at 100 USD (the governor's
    collar needs a last price), which ``eng`` has seen with no decision."""
    opens = None if opens is None else [100.0, *opens]
    b = list(parse_frame(_frame(["2012-11-20", *days], [100.0, *closes], opens), "AAPL"))
    eng.step(b[0], None)
    return b[1:]


# Wed 2012-11-21, Fri 11-23 (after Thanksgiving, early close), Mon 11-26, Tue 11-27
WEEK = ["2012-11-21", "2012-11-23", "2012-11-26", "2012-11-27"]


def test_a_decision_fills_at_the_next_session_open_over_a_holiday_and_a_weekend():
    eng = _engine()
    wed, fri, mon, tue = _bars(eng, WEEK, [100.0, 101.0, 102.0, 103.0])
    r = eng.step(wed, 0.9)  # long, decided on Wednesday's close
    assert r.order_qty > 0 and not r.closing
    assert sess.fill_time(wed.ts, DAILY) == fri.ts  # not Thanksgiving (ts + 86400)
    r = eng.step(fri, 0.1)  # filled at Friday's open; then short, decided on Friday's close
    assert r.fill is not None and r.fill.ref_price == pytest.approx(fri.open) and r.fill.filled_qty > 0
    assert r.order_qty < 0 and not r.closing
    assert sess.fill_time(fri.ts, DAILY) == mon.ts
    r = eng.step(mon, None)
    assert r.fill is not None and r.fill.ref_price == pytest.approx(mon.open)
    assert eng.live.position < 0


def test_a_daily_position_is_held_overnight_and_over_the_weekend():
    eng = _engine()
    bars = _bars(eng, WEEK, [100.0, 101.0, 102.0, 103.0])
    held = []
    for i, bar in enumerate(bars):
        r = eng.step(bar, 0.9)
        assert not r.closing and r.order_qty >= 0  # no end-of-day closing order, ever
        held.append(eng.live.position)
    assert held[0] == 0 and held[1] > 0 and held[1] == held[2] == held[3]  # carried Fri -> Mon -> Tue
    assert eng.holds_overnight


def test_without_the_next_session_rule_nothing_is_held(monkeypatch):
    """Control off: filling at ts + 1 bar (86400 s) lands on Thanksgiving after Wednesday and on
    Saturday after Friday (non-sessions): the target is flat there, nothing is carried."""
    monkeypatch.setattr(sess.XNYS, "fill_time", lambda ts, s: ts + pd.Timedelta(seconds=s).to_pytimedelta())
    eng = _engine()
    held = []
    for bar in _bars(eng, WEEK, [100.0, 101.0, 102.0, 103.0]):
        eng.step(bar, 0.9)
        held.append(eng.live.position)
    assert held[1] == held[2] == 0  # not held over Friday -> Monday (the real rule holds it)


def test_day_pnl_and_the_daily_loss_halt_are_per_session():
    eng = _engine(max_daily_loss=300.0)
    # long on Wed's close; Fri's session drops 5 %: the day's loss (> 300 USD on ~200 shares at 100) halts
    wed, fri, mon, tue = _bars(eng, WEEK, [100.0, 95.0, 95.5, 96.0], opens=[100.0, 100.0, 95.5, 96.0])
    eng.step(wed, 0.9)
    r = eng.step(fri, 0.9)
    pos = eng.live.position
    assert pos > 0
    assert eng.governor_state.trading_date == "2012-11-23"  # the session date is the trading day
    # day P&L: Friday's session, from Wednesday's close (the position bought at Friday's open)
    assert eng.day_pnl() == pytest.approx(eng.live.pnl(), abs=1e-9)
    assert eng.day_pnl() < -300.0 and r.trading_state == gov.HALTED and r.closing
    r = eng.step(mon, 0.9)  # the flatten fills at Monday's open; a new session: the halt is lifted
    assert eng.live.position == 0
    assert eng.governor_state.trading_date == "2012-11-26" and r.trading_state == gov.ACTIVE
    start = eng.live.pnl() - eng.day_pnl()
    assert eng.day_pnl() == pytest.approx(eng.live.pnl() - start)
    # the market time is the session's close, not the bar start + 86400 s
    assert eng._market_ns == sess._ns(utc(2012, 11, 26, 21, 0))


# -- costs, sizing and the jump bound on real daily bars ----------------------------------------------
def test_causal_impact_on_daily_bars(msft):
    assert CausalImpact(bar_seconds=60).bars_per_session == pytest.approx(390)
    assert CausalImpact(bar_seconds=300).bars_per_session == pytest.approx(78)
    imp = CausalImpact(bar_seconds=DAILY)
    assert imp.bars_per_session == 1.0
    ts_ns = msft.ts.astype("int64").tolist()
    for t, c, v in zip(ts_ns, msft.close.tolist(), msft.volume.tolist()):
        imp.update(t, c, v)
    assert imp.n_returns == len(msft) - 1  # Mondays and days after holidays count: consecutive sessions
    realised = float(np.std(np.diff(np.log(msft.close)), ddof=1))
    assert 0.5 * realised < imp.sigma_daily < 2.0 * realised and 0.005 < imp.sigma_daily < 0.05
    assert 0.3 * msft.volume[-60:].mean() < imp.adv_shares < 3.0 * msft.volume[-60:].mean()
    # the batch update is the same arithmetic
    run = CausalImpact(bar_seconds=DAILY)
    run.update_run(ts_ns, msft.close.tolist(), msft.volume.tolist())
    assert run.to_dict() == pytest.approx(imp.to_dict())
    # the look-ahead estimate agrees on sigma
    est = estimate_impact_model(msft.close, msft.volume, sess.bars_per_session(DAILY), ts=msft.ts)
    assert est.sigma_daily == pytest.approx(realised, rel=1e-9)
    assert est.adv_shares == pytest.approx(msft.volume.mean(), rel=1e-9)


def test_atr_sizing_on_daily_bars(msft):
    sizer = AtrSizer()
    for b in msft:
        sizer.update(b.ts, b.high, b.low, b.close, None)  # as the engine: no session open for daily bars
    assert sizer.source == REGULAR and sizer.switches == 0
    price = float(msft.close[-1])
    assert 0.005 * price < sizer.atr < 0.05 * price  # a daily ATR, a percent or two of the price
    shares = sizer.shares(100_000.0, price, 50_000.0)
    assert 0.01 < shares * price / 100_000.0 < 0.5  # a few per cent of capital, under the cap


def test_real_daily_moves_pass_the_daily_jump_bound():
    goog = daily_bars("GOOG")  # +13 % on 2011-07-15 (earnings)
    assert max_jump_ratio_for(DAILY) > DEFAULT_MAX_JUMP_RATIO == max_jump_ratio_for(60) == max_jump_ratio_for(300)
    assert EngineConfig.for_capital(1e5, bar_seconds=DAILY).max_bar_jump_ratio == max_jump_ratio_for(DAILY)
    daily = BarCheck(max_jump_ratio_for(DAILY))
    minute = BarCheck(max_jump_ratio_for(60))  # the control switched off: the minute bound on daily bars
    refused = []
    for t, o, h, lo, c, v in zip(goog.ts.astype("int64").tolist(), goog.open, goog.high, goog.low, goog.close, goog.volume):
        assert daily.check(t, o, h, lo, c, v) == ""
        if minute.check(t, o, h, lo, c, v) == PRICE_JUMP:
            refused.append(pd.Timestamp(t).date().isoformat())
    assert "2011-07-15" in refused
    # a 10x print is still refused on daily bars
    chk = BarCheck(max_jump_ratio_for(DAILY))
    t0 = int(goog.ts[0].astype("int64"))
    for k in range(5):
        chk.check(t0 + k, 100.0, 101.0, 99.0, 100.0, 1e6)
    assert chk.check(t0 + 10, 1000.0, 1001.0, 999.0, 1000.0, 1e6) == PRICE_JUMP


# -- replay and backtest on real daily bars -----------------------------------------------------------
def _cfg():
    return EngineConfig.for_capital(100_000.0, symbol="MSFT", bar_seconds=DAILY)


def test_batch_replay_equals_the_bar_by_bar_path_on_daily_bars(msft):
    a, b = batch_and_steps(Tilt(), _cfg(), msft, seed=3)
    assert_same_run(a, b)
    assert a.stats().trades > 0


def test_msft_daily_backtest_2010_2013_holds_positions_across_sessions(msft):
    eng = backtest.make_engine(Tilt(), _cfg(), msft, seed=0)
    assert eng.broker.participation == pytest.approx(0.01)  # 1 % of a day's volume
    carried = closing = 0
    prev = 0
    for bar in msft:
        r = eng.on_bar(bar)
        pos = eng.live.position
        carried += prev != 0 and pos == prev  # the same position at two consecutive session closes
        closing += r.closing and r.trading_state == gov.ACTIVE  # a closing order with no halt: end of day
        prev = pos
    s = eng.stats()
    assert s.trades > 10 and carried > 50 and closing == 0
    assert math.isfinite(s.pnl_usd) and math.isfinite(s.simulated_pnl_usd)
    assert s.hard_limit_breaches == 0 and not s.bars_refused
    assert s.slippage_modeled_bps is not None and 0 < s.slippage_modeled_bps < 50


def test_backtest_cli_on_an_msft_daily_csv(tmp_path, monkeypatch):
    import quantramp.trader.model as model_mod
    from quantramp.trader.cli import app

    monkeypatch.setattr(model_mod, "load_model", lambda uri, tracking=None: Tilt())
    csv = write_csv(tmp_path / "msft.csv", "MSFT")
    assert pd.read_csv(csv)["datetime"].iloc[0] == "2010-01-04"  # dates, no time of day
    args = ["backtest", "--model-uri", "models:/m/1", "--capital-usd", "100000", "--bars-source", "file",
            "--bars-url", str(csv), "--symbol", "MSFT"]
    r = CliRunner().invoke(app, args + ["--bar-seconds", "86400"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["bars"] == 795 and out["bar_seconds"] == DAILY and out["trades"] > 0
    assert math.isfinite(out["pnl_usd"]) and out["hard_limit_breaches"] == 0
    # the same file for a minute trader (the default): refused, not traded as minute bars
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and "86400 s apart" in r.output
    # daily series are not looped (a loop shifts whole weeks: holidays, DST)
    r = CliRunner().invoke(app, args + ["--bar-seconds", "86400", "--bars", "800"])
    assert r.exit_code == 2 and "not looped" in r.output


def test_daily_frame_helper_is_the_split_free_window():
    f = daily_frame("AAPL")
    assert f["datetime"].iloc[0] == "2010-01-04" and f["datetime"].iloc[-1] == "2013-03-01"
    ratio = f["close"].to_numpy()[1:] / f["close"].to_numpy()[:-1]
    assert ratio.min() > 0.8 and ratio.max() < 1.2  # no split (a 7:1 would be 0.14)
    with pytest.raises(ValueError):
        daily_frame("TSLA")


class _Conn:
    """A psycopg-like connection that records what load_frame would insert."""

    autocommit = True
    rows: list = []

    def cursor(self):
        conn = self

        class Cur:
            rowcount = 0

            def __enter__(self):
                return self

            def __exit__(self, *a):
                return False

            def executemany(self, q, rows):
                conn.rows = list(rows)
                self.rowcount = len(conn.rows)

        return Cur()


def test_load_frame_stores_daily_bars_at_the_session_opens(msft):
    """What the PostgreSQL round trip relies on (tests/integration/test_postgres_bars.py runs it for real)."""
    as_bars, as_dates = _Conn(), _Conn()
    assert barsource.load_frame(as_bars, "daily_bars", "MSFT", msft) == 795
    assert barsource.load_frame(as_dates, "daily_bars", "MSFT", daily_frame("MSFT")) == 795
    assert [r[1] for r in as_dates.rows] == [r[1] for r in as_bars.rows]
    assert as_dates.rows[0][1] == utc(2010, 1, 4, 14, 30)
    for a, b in zip(as_bars.rows, as_dates.rows):
        assert a[2:] == pytest.approx(b[2:], abs=1e-9)
    bad = daily_frame("MSFT", "2013-02-01", "2013-03-01")
    bad.loc[bad.index[3], "datetime"] = "2013-02-09"  # a Saturday
    with pytest.raises(MarketDataError, match="2013-02-09"):
        barsource.load_frame(_Conn(), "daily_bars", "MSFT", bad)
    with pytest.raises(MarketDataError, match="no bar times"):
        barsource.load_frame(_Conn(), "daily_bars", "MSFT", bad.drop(columns="datetime"))


def test_feed_latency_of_a_daily_bar_counts_from_the_session_close():
    from quantramp.trader.pausegate import feed_latency

    fri = utc(2012, 11, 23, 14, 30)  # an early close: 18:00 UTC
    assert feed_latency(fri, utc(2012, 11, 23, 18, 0, 2), DAILY) == pytest.approx(2.0)
    assert feed_latency(utc(2026, 7, 29, 13, 30), utc(2026, 7, 29, 13, 31, 1), 60) == pytest.approx(1.0)
