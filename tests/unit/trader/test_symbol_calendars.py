"""A symbol trades its own exchange's sessions (trader/session.py ``Calendar``; XNYS by default).

London (XLON: 08:00-16:30 London, early closes 12:30 on 24 and 31 December, UK bank holidays) is the
worked example: the end-of-day flatten comes 5 minutes before London's close, a UK holiday is no session
even when New York trades, daily dates are stamped at London's open and a daily decision fills at the
next London session. Each test that shows a rule also runs the same bars under XNYS, so it fails if the
engine ignores the symbol's calendar."""

from __future__ import annotations

import asyncio
import warnings
from datetime import date, datetime, timedelta, timezone
from itertools import islice

import numpy as np
import pandas as pd
import pytest

from quantramp.trader import barsource
from quantramp.trader import governor as gov
from quantramp.trader import server as S
from quantramp.trader import session as sess
from quantramp.trader.broker import ImpactModel, SimBroker
from quantramp.trader.certification.pod import Script
from quantramp.trader.engine import Engine, EngineConfig
from quantramp.trader.marketdata import Bar, Bars, MarketDataError, parse_frame, resample
from quantramp.trader.metrics import TraderMetrics
from quantramp.trader.portfolio import Portfolio
from support.replay_equivalence import assert_same_run, batch_and_steps
from support.stock_bars import daily_frame
from test_trader_engine_orders import Tilt

UTC = timezone.utc
LONDON = sess.calendar("XLON")
DAILY = sess.DAILY_BAR_SECONDS


def utc(y, m, d, hh=0, mm=0):
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


# -- the calendars --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sess.SUPPORTED_CALENDARS)
def test_every_supported_calendar_has_one_local_date_per_session_and_no_break(name):
    """What Calendar relies on: a session is found by the local date of a time (no session crosses
    midnight) and is one interval (no lunch break), over the whole loaded range."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import exchange_calendars

        sched = exchange_calendars.get_calendar(name, start=sess.CALENDAR_START, end=sess.CALENDAR_END).schedule
    cal = sess.calendar(name)
    assert sched["break_start"].isna().all()
    local = sched["open"].dt.tz_convert(str(cal.tz)).dt.date
    assert (local == sched["close"].dt.tz_convert(str(cal.tz)).dt.date).all()
    assert (local == pd.Index(sched.index).date).all()  # the session label is the local date
    first = cal.session_for(sched.index[0].date())
    assert first is not None and first.open == sched["open"].iloc[0].to_pydatetime()
    assert 3 * 3600 <= cal.session_seconds <= 10 * 3600


@pytest.mark.parametrize("name", ["XTKS", "XHKG", "CMES", "LSE", "xlon", ""])
def test_a_calendar_the_trader_cannot_run_is_refused_by_name(name):
    with pytest.raises(sess.UnknownCalendar, match="XLON"):
        sess.calendar(name)
    with pytest.raises(ValueError, match="not supported"):
        EngineConfig(capital_usd=1e4, limits=gov.RiskLimits(100.0, 100.0, 10.0), calendar=name)


def test_london_sessions_holidays_and_early_closes():
    s = LONDON.session_for(date(2026, 12, 1))
    assert (s.open, s.close) == (utc(2026, 12, 1, 8), utc(2026, 12, 1, 16, 30))
    summer = LONDON.session_for(date(2026, 7, 1))  # BST: 08:00 London is 07:00 UTC
    assert (summer.open, summer.close) == (utc(2026, 7, 1, 7), utc(2026, 7, 1, 15, 30))
    assert LONDON.session_seconds == 30_600 and sess.XNYS.session_seconds == 23_400
    assert [x.day for x in LONDON.early_closes(date(2026, 1, 1), date(2026, 12, 31))] == [date(2026, 12, 24), date(2026, 12, 31)]
    assert LONDON.session_for(date(2026, 12, 24)).close == utc(2026, 12, 24, 12, 30)
    # UK Summer bank holiday: New York trades, London does not; US Thanksgiving: the other way round
    assert LONDON.session_for(date(2026, 8, 31)) is None and sess.session_for(date(2026, 8, 31)) is not None
    assert LONDON.session_for(date(2026, 11, 26)) is not None and sess.session_for(date(2026, 11, 26)) is None
    assert LONDON.next_session(date(2026, 8, 28)).day == date(2026, 9, 1)  # Friday -> Tuesday
    assert sess.calendar("XLON") is LONDON  # one instance per name


# -- the engine ---------------------------------------------------------------------------------------
class Long:
    def p_up_one(self, x):
        return 0.9


def engine(calendar="XNYS", bar_seconds=60):
    impact = ImpactModel(sigma_daily=0.0, adv_shares=1e9)
    limits = gov.RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=1_000.0,
                            price_collar_ratio=0.5)
    cfg = EngineConfig(capital_usd=10_000.0, limits=limits, sizing=None, calendar=calendar, bar_seconds=bar_seconds)
    return Engine(cfg, Long(), SimBroker(impact, seed=0, noise_sigma=0.0), impact)


def minute_bars(start, n, symbol=""):
    return [Bar(start + timedelta(minutes=i), 100.0, 100.05, 99.95, 100.0, 1e6, symbol=symbol) for i in range(n)]


def test_a_london_position_is_flat_from_16_25_london_and_new_york_hours_do_not_decide_it():
    bars = minute_bars(utc(2026, 12, 1, 15, 0), 90)  # 15:00-16:29 London (10:00-11:29 New York)
    held = {}
    for name in ("XLON", "XNYS"):
        eng = engine(name)
        steps = [eng.on_bar(b) for b in bars]
        exits = [st.ts for st in steps if st.fill is not None and st.fill.filled_qty < 0]
        held[name] = (exits, eng.live.position)
    assert held["XLON"] == ([utc(2026, 12, 1, 16, 25)], 0)  # filled at the 16:25 open, then flat
    assert held["XNYS"][0] == [] and held["XNYS"][1] > 0  # New York's 15:55 is hours away


def test_london_flattens_at_12_25_on_christmas_eve():
    eng = engine("XLON")
    steps = [eng.on_bar(b) for b in minute_bars(utc(2026, 12, 24, 11, 30), 60)]
    exits = [st.ts for st in steps if st.fill is not None and st.fill.filled_qty < 0]
    assert exits == [utc(2026, 12, 24, 12, 25)] and eng.live.position == 0


def test_a_uk_bank_holiday_is_no_session_for_a_london_symbol_though_new_york_trades():
    bars = minute_bars(utc(2026, 8, 31, 13, 30), 60)  # Monday: 14:30-15:29 London, 09:30-10:29 New York
    traded = {}
    for name in ("XLON", "XNYS"):
        eng = engine(name)
        traded[name] = sum(1 for b in bars if eng.on_bar(b).order_qty)
    assert traded == {"XLON": 0, "XNYS": 1}


def test_the_trading_day_is_the_exchange_s_local_date():
    eng = engine("XASX")  # Sydney: 10:00 local on Wed 2026-12-02 is 23:00 UTC on Tue 12-01
    s = sess.calendar("XASX").session_for(date(2026, 12, 2))
    assert s.open == utc(2026, 12, 1, 23)
    for b in minute_bars(s.open, 5):
        eng.on_bar(b)
    assert eng.governor_state.trading_date == "2026-12-02"


# -- daily bars ---------------------------------------------------------------------------------------
def frame(days, closes=None):
    closes = closes or [100.0 + i for i in range(len(days))]
    return pd.DataFrame({"datetime": days, "open": closes, "high": [c + 1 for c in closes],
                         "low": [c - 1 for c in closes], "close": closes, "volume": [1e6] * len(days)})


def test_daily_dates_are_stamped_at_london_s_open_and_a_uk_holiday_is_refused():
    bars = parse_frame(frame(["2026-06-30", "2026-12-01"]), "CSPX", calendar="XLON")
    assert list(pd.DatetimeIndex(bars.ts)) == [pd.Timestamp("2026-06-30 07:00"), pd.Timestamp("2026-12-01 08:00")]
    with pytest.raises(MarketDataError, match="2026-08-31.*not an XLON session"):
        parse_frame(frame(["2026-08-28", "2026-08-31"]), "CSPX", calendar="XLON")
    assert len(parse_frame(frame(["2026-08-28", "2026-08-31"]), "CSPX")) == 2  # a New York session


def test_a_london_daily_position_is_held_over_the_bank_holiday_weekend():
    """Friday's decision fills at Tuesday's London open (Monday 31 Aug is a UK holiday). The same dates
    read as New York sessions fill on Monday, and London's dates are no New York daily series."""
    assert LONDON.fill_time(utc(2026, 8, 28, 7), DAILY) == utc(2026, 9, 1, 7)  # Friday -> Tuesday 08:00 London
    assert sess.fill_time(utc(2026, 8, 28, 13, 30), DAILY) == utc(2026, 8, 31, 13, 30)  # Friday -> Monday
    eng = engine("XLON", DAILY)
    bars = list(parse_frame(frame(["2026-08-26", "2026-08-27", "2026-08-28", "2026-09-01", "2026-09-02"]), "X",
                            calendar="XLON"))
    positions = []
    for b in bars:
        eng.step(b, 0.9)
        positions.append(eng.live.position)
    assert positions[:2] == [0, 0] and positions[2] > 0  # (the first bar gives the collar its last price)
    assert positions[3] == positions[4] == positions[2]  # held Fri -> Tue -> Wed: no flatten
    assert eng.governor_state.trading_date == "2026-09-02"


def test_resampling_anchors_bins_at_london_s_open():
    start = utc(2026, 12, 1, 8)
    n = 510
    ts = np.array([np.datetime64((start + timedelta(minutes=i)).replace(tzinfo=None), "ns") for i in range(n)])
    px = 100.0 + np.arange(n) * 0.01
    bars = Bars("CSPX", ts, px, px + 0.05, px - 0.05, px, np.full(n, 1e3))
    five = resample(bars, 300, "XLON")
    assert len(five) == 102 and pd.Timestamp(five.ts[0]) == pd.Timestamp("2026-12-01 08:00")
    day = resample(bars, DAILY, "XLON")
    assert len(day) == 1 and day.volume[0] == pytest.approx(510e3, abs=1e-6)
    holiday = Bars("CSPX", ts - np.timedelta64(92, "D"), px, px + 0.05, px - 0.05, px, np.full(n, 1e3))  # 2026-08-31
    assert pd.Timestamp(holiday.ts[0]).date() == date(2026, 8, 31)
    with pytest.raises(MarketDataError, match="not an XLON session"):
        resample(holiday, DAILY, "XLON")
    assert len(resample(holiday, DAILY)) == 1  # a New York session


def test_the_batch_replay_equals_bar_by_bar_on_london_minutes():
    """The batch path reads the calendar too (fill times, phases, local dates): same run as one by one."""
    rng = np.random.default_rng(7)
    days = [date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2)]
    starts = [LONDON.session_for(d).open for d in days]
    ts = np.concatenate([[np.datetime64((s + timedelta(minutes=i)).replace(tzinfo=None), "ns") for i in range(510)]
                         for s in starts])
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 5e-4, len(ts))))
    bars = Bars("CSPX", ts, close, close * 1.0005, close * 0.9995, close, np.full(len(ts), 5e4))
    cfg = EngineConfig.for_capital(10_000.0, calendar="XLON")
    a, b = batch_and_steps(Tilt(), cfg, bars, seed=3)
    assert_same_run(a, b)
    assert a.stats().trades > 0
    late = [t for t in pd.DatetimeIndex(bars.ts) if t.hour == 16 and t.minute >= 26]
    assert late and a.live.position == 0  # flat at each London close


# -- a pod of symbols on two exchanges ------------------------------------------------------------------
ENV = {
    "QR_STRATEGY": "x", "QR_ROLE": "challenger", "QR_MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
    "QR_CAPITAL_USD": "100000", "QR_SYMBOLS": "MSFT,CSPX", "QR_CALENDARS": "CSPX=XLON", "QR_BARS_SOURCE": "file",
    "QR_BARS_URL": "/x/{symbol}.csv", "QR_BAR_INTERVAL_SECONDS": "0",
}


def test_a_pod_runs_each_symbol_on_its_exchange():
    s = S.TraderSettings.from_env(ENV)
    pf = S.build_engine(s, Script(lambda i: 0.9))
    assert isinstance(pf, Portfolio)
    assert {x: e.calendar.name for x, e in pf.engines.items()} == {"MSFT": "XNYS", "CSPX": "XLON"}
    # 16:00-16:39 UTC on 2026-12-01: London closes 16:30, New York trades on
    bars = sorted(minute_bars(utc(2026, 12, 1, 15, 0), 100, "MSFT") + minute_bars(utc(2026, 12, 1, 15, 0), 90, "CSPX"),
                  key=lambda b: (b.ts, b.symbol))
    for b in bars:
        pf.on_bar(b)
    assert pf.engines["CSPX"].live.position == 0 and pf.engines["CSPX"].stats().trades > 0
    assert pf.engines["MSFT"].live.position > 0


def test_the_daily_replay_of_two_exchanges_stays_on_each_one_s_session_opens():
    msft = parse_frame(daily_frame("MSFT", "2012-08-20", "2012-09-07"), "MSFT")
    # the same prices on London's dates (27 Aug 2012 was a UK bank holiday, 3 Sep a US one)
    london_days = [d for d in pd.bdate_range("2012-08-20", "2012-09-07").strftime("%Y-%m-%d")
                   if LONDON.session_for(date.fromisoformat(d))]
    cspx = parse_frame(frame(london_days), "CSPX", calendar="XLON")
    series = {"MSFT": msft, "CSPX": cspx}
    cals = {"MSFT": sess.XNYS, "CSPX": LONDON}
    got = list(islice(S.replay_from(series, None, DAILY, cals), 3 * (len(msft) + len(cspx))))
    assert [b.ts for b in got] == sorted(b.ts for b in got)
    for b in got:
        s = cals[b.symbol].session_at(b.ts)
        assert s is not None and s.open == b.ts, b
    london = [LONDON.local_date(b.ts) for b in got if b.symbol == "CSPX"]
    assert all(LONDON.session_index(y) - LONDON.session_index(x) == 1 for x, y in zip(london, london[1:]))
    assert date(2012, 8, 27) not in london and date(2012, 9, 3) in london
    after = got[len(got) // 2].ts
    assert next(S.replay_from(series, after, DAILY, cals)).ts > after
    # London's daily bars are not New York's: the spacing check of the pod refuses them under XNYS
    assert barsource.check_spacing(cspx, DAILY, "w", "XLON") is cspx
    with pytest.raises(MarketDataError, match="not a session open"):
        barsource.check_spacing(cspx, DAILY, "w")


def test_a_paced_pod_s_day_is_the_newest_local_date_of_its_symbols():
    s = S.TraderSettings.from_env(dict(ENV, QR_SYMBOLS="MSFT,BHP", QR_CALENDARS="BHP=XASX"))
    eng = S.build_engine(s, Script(lambda i: 0.5))
    m = TraderMetrics(s.strategy, s.role, s.symbol, symbols=s.symbols)
    rt = S.Runtime(s, eng, None, m, S._State(m), None)
    sydney = sess.calendar("XASX").session_for(date(2026, 12, 2)).open  # 23:00 UTC on 12-01

    async def go():
        await rt.on_bar(Bar(utc(2026, 12, 1, 20, 0), 100, 100, 100, 100, 1e6, symbol="MSFT"), 0.0)
        assert rt.day == "2026-12-01"
        await rt.on_bar(Bar(sydney, 50, 50, 50, 50, 1e6, symbol="BHP"), 0.0)
        assert rt.day == "2026-12-02"

    asyncio.run(go())


# -- the CLI and training --------------------------------------------------------------------------------
def london_daily_csv(tmp_path):
    f = daily_frame("AAPL", "2011-01-03", "2012-12-31")
    f = f[[LONDON.session_for(date.fromisoformat(d)) is not None for d in f["datetime"]]]
    # stamped at London's opens (a file of bare dates is read in the calendar the reader is given)
    stamped = parse_frame(f, "CSPX", calendar="XLON").to_frame().reset_index()
    stamped.columns = ["datetime", *stamped.columns[1:]]
    path = tmp_path / "CSPX.csv"
    stamped.to_csv(path, index=False)
    return path


def test_the_backtest_cli_trades_a_london_daily_series_on_london_s_calendar(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import quantramp.trader.model as model_mod
    from quantramp.trader.cli import app

    monkeypatch.setattr(model_mod, "load_model", lambda uri, tracking=None: Tilt())
    args = ["backtest", "--model-uri", "models:/m/1", "--capital-usd", "100000", "--bars-source", "file",
            "--bars-url", str(london_daily_csv(tmp_path)), "--symbol", "CSPX", "--bar-seconds", "86400"]
    r = CliRunner().invoke(app, args + ["--calendar", "XLON"])
    assert r.exit_code == 0, r.output
    import json

    out = json.loads(r.stdout)
    assert out["calendar"] == "XLON" and out["trades"] > 0 and out["hard_limit_breaches"] == 0
    r = CliRunner().invoke(app, args)  # read as New York sessions: refused, saying what to do
    assert r.exit_code == 1 and "name its calendar" in r.output
    r = CliRunner().invoke(app, args + ["--calendar", "XTKS"])
    assert r.exit_code == 2 and "--calendar XTKS: use one of" in r.output
    r = CliRunner().invoke(app, ["backtest", "--model-uri", "m", "--capital-usd", "1000", "--calendar", "XLON"])
    assert r.exit_code == 2 and "the bundled sample is XNYS bars" in r.output


def test_training_annualises_by_the_exchange_s_session_length():
    from quantramp.trader.barsource import BarSource
    from quantramp.trader.train import bars_training_data

    start = [LONDON.session_for(d).open for d in pd.bdate_range("2026-11-02", "2026-12-18").date
             if LONDON.session_for(d)]
    ts = np.array([np.datetime64((s + timedelta(hours=h)).replace(tzinfo=None), "ns") for s in start for h in range(9)])
    close = 100.0 + np.sin(np.arange(len(ts)) / 5.0)
    hourly = Bars("CSPX", ts, close, close + 0.1, close - 0.1, close, np.full(len(ts), 1e4))

    class Source(BarSource):
        def describe(self):
            return "test"

        def history(self, symbol):
            return hourly

    london = bars_training_data(Source(), "CSPX", 3600, calendar="XLON")
    assert london.bars_per_session == 9 and london.periods_per_year == 9 * 252 and "(XLON)" in london.description
    assert bars_training_data(Source(), "CSPX", 3600).bars_per_session == 7  # New York's 6.5 h
