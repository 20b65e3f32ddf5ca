"""XNYS sessions and the end-of-day flatten: early closes 2024-2027, holidays, both DST switches."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from quantramp.trader import session as sess
from quantramp.trader.broker import ImpactModel, SimBroker
from quantramp.trader.engine import Engine, EngineConfig
from quantramp.trader.governor import RiskLimits
from quantramp.trader.marketdata import Bar

UTC = timezone.utc
#: NYSE early closes (13:00 New York) 2024-2027, as published by the exchange
EARLY_CLOSES = [
    date(2024, 7, 3), date(2024, 11, 29), date(2024, 12, 24),
    date(2025, 7, 3), date(2025, 11, 28), date(2025, 12, 24),
    date(2026, 11, 27), date(2026, 12, 24),
    date(2027, 11, 26),
]
HOLIDAYS = [date(2024, 12, 25), date(2025, 1, 9), date(2026, 7, 3), date(2026, 11, 26), date(2027, 12, 24)]
# (session before the switch, session after): 2026-03-08 and 2026-11-01 are the US DST switches
DST = [(date(2026, 3, 6), date(2026, 3, 9)), (date(2026, 10, 30), date(2026, 11, 2))]


def utc(y, m, d, hh, mm):
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


def test_the_calendar_knows_exactly_these_early_closes():
    got = [s.day for s in sess.early_closes(date(2024, 1, 1), date(2027, 12, 31))]
    assert got == EARLY_CLOSES


@pytest.mark.parametrize("day", EARLY_CLOSES, ids=str)
def test_early_close_flattens_at_12_55_new_york(day):
    s = sess.session_for(day)
    ny_close = s.close.astimezone(sess.NEW_YORK)
    assert (ny_close.hour, ny_close.minute) == (13, 0)
    flat = s.flatten_at().astimezone(sess.NEW_YORK)
    assert (flat.hour, flat.minute) == (12, 55)
    clock = sess.SessionClock()
    assert clock.phase(s.flatten_at() - timedelta(minutes=1)) == 1
    assert clock.phase(s.flatten_at()) == -1
    assert sess.is_trading_time(s.flatten_at() - timedelta(seconds=1))
    assert not sess.is_trading_time(s.flatten_at())
    assert sess.must_be_flat(s.flatten_at()) and not sess.must_be_flat(s.open)
    # what would have been an ordinary afternoon is closed
    assert clock.phase(s.close.replace(hour=s.close.hour + 2)) == -1


@pytest.mark.parametrize("day", HOLIDAYS, ids=str)
def test_holidays_are_not_sessions(day):
    assert sess.session_for(day) is None
    noon = datetime(day.year, day.month, day.day, 12, 0, tzinfo=sess.NEW_YORK)
    assert sess.SessionClock().phase(noon) == -1 and not sess.is_trading_time(noon)


@pytest.mark.parametrize("before,after", DST, ids=["spring", "autumn"])
def test_dst_switches_keep_15_55_new_york(before, after):
    for day in (before, after):
        s = sess.session_for(day)
        o, f = s.open.astimezone(sess.NEW_YORK), s.flatten_at().astimezone(sess.NEW_YORK)
        assert (o.hour, o.minute, f.hour, f.minute) == (9, 30, 15, 55)
    # the UTC hour moves by one across each switch
    b, a = sess.session_for(before).close.hour, sess.session_for(after).close.hour
    assert abs(a - b) == 1
    assert {b, a} == {20, 21}


def test_weekend_out_of_range_and_naive_times():
    assert sess.session_for(date(2026, 8, 1)) is None  # Saturday
    assert sess.session_for(date(2040, 1, 3)) is None  # beyond the loaded range: fail closed
    naive = datetime(2026, 7, 29, 15, 0)  # read as UTC: 11:00 New York
    assert sess.is_trading_time(naive)
    assert sess.session_close_utc(utc(2026, 7, 29, 15, 0)) == utc(2026, 7, 29, 20, 0)
    assert sess.session_close_utc(utc(2026, 8, 1, 15, 0)) is None
    assert sess.SessionClock().phase(utc(2026, 7, 29, 13, 0)) == 0  # before the open


# -- the engine on those days --------------------------------------------------------------
class Long:
    def p_up_one(self, x):
        return 0.9


def engine():
    impact = ImpactModel(sigma_daily=0.0, adv_shares=1e9)
    limits = RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=1_000.0)
    cfg = EngineConfig(capital_usd=10_000.0, limits=limits, sizing=None)
    return Engine(cfg, Long(), SimBroker(impact, seed=0), impact)


def minute_bars(start, n):
    return [Bar(start + timedelta(minutes=i), 100.0, 100.05, 99.95, 100.0, 1e6) for i in range(n)]


@pytest.mark.parametrize("day", EARLY_CLOSES, ids=str)
def test_engine_is_flat_from_12_55_on_every_early_close(day):
    s = sess.session_for(day)
    eng = engine()
    steps = [eng.on_bar(b) for b in minute_bars(s.close - timedelta(minutes=60), 60)]
    fills = [(st.ts, st.fill.filled_qty) for st in steps if st.fill is not None and st.fill.filled_qty]
    assert fills[0][1] == 50
    last_ts, last_qty = fills[-1]
    assert last_qty == -50 and last_ts == s.close - timedelta(minutes=5)  # filled at the 12:55 open
    assert steps[-1].order_qty == 0 and eng.live.position == 0
    closing = [st for st in steps if st.order_qty]
    assert closing[-1].closing and not closing[0].closing


@pytest.mark.parametrize("before,after", DST, ids=["spring", "autumn"])
def test_engine_is_flat_from_15_55_across_dst(before, after):
    for day in (before, after):
        s = sess.session_for(day)
        eng = engine()
        steps = [eng.on_bar(b) for b in minute_bars(s.close - timedelta(minutes=45), 45)]
        exits = [st.ts for st in steps if st.fill is not None and st.fill.filled_qty < 0]
        assert [t.astimezone(sess.NEW_YORK).strftime("%H:%M") for t in exits] == ["15:55"]
        assert eng.live.position == 0


def test_engine_never_trades_on_a_holiday():
    eng = engine()
    steps = [eng.on_bar(b) for b in minute_bars(utc(2026, 11, 26, 15, 0), 90)]  # Thanksgiving 2026
    assert all(st.order_qty == 0 and st.fill is None for st in steps)
    assert any(st.signal == 1 for st in steps)  # the model wanted to
