"""The pod's runtime on daily bars (one per XNYS session): the replay loops by whole sessions, a position is
held across nights and weekends on the wall clock as on the bars, and a daily feed is stale only when the next
session's close is overdue. Several symbols of daily bars run as one portfolio."""

from __future__ import annotations

import asyncio
from itertools import islice
from datetime import datetime, timezone

import pytest

from quantramp.trader import server as S
from quantramp.trader import session as sess
from quantramp.trader.certification.pod import Script
from quantramp.trader.metrics import TraderMetrics
from quantramp.trader.portfolio import Portfolio
from support.stock_bars import daily_bars

ENV = {
    "QR_STRATEGY": "d", "QR_ROLE": "challenger", "QR_MODEL_URI": "models:/d/1", "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
    "QR_CAPITAL_USD": "100000", "QR_SYMBOLS": "MSFT", "QR_BARS_SOURCE": "file", "QR_BARS_URL": "/x/{symbol}.csv",
    "QR_BAR_SECONDS": "86400", "QR_BAR_INTERVAL_SECONDS": "1",
}
#: around Thanksgiving 2012 (Thursday 11-22 closed, Friday 11-23 an early close)
WINDOW = ("2012-11-13", "2012-11-30")


class Clock:
    def __init__(self):
        self.t = 1_000.0

    def __call__(self):
        return self.t


def test_the_daily_replay_stays_on_session_opens_and_loops_by_whole_sessions():
    bars = {s: daily_bars(s, *WINDOW) for s in ("MSFT", "AAPL")}
    n = len(bars["MSFT"])
    it = S.replay_from(bars, None, 86400)
    got = [next(it) for _ in range(4 * n)]
    assert [b.symbol for b in got[:4]] == ["MSFT", "AAPL", "MSFT", "AAPL"]
    for b in got:
        s = sess.session_at(b.ts)
        assert s is not None and s.open == b.ts, b
    days = [sess.new_york_date(b.ts) for b in got[::2]]
    assert all(sess.session_index(b) - sess.session_index(a) == 1 for a, b in zip(days, days[1:]))
    assert days[n] == sess.next_session(days[n - 1]).day  # the second loop follows the first
    assert got[2 * n].close == pytest.approx(float(bars["MSFT"].close[0]), abs=1e-9)
    after = S.replay_from(bars, got[2 * n + 1].ts, 86400)
    assert next(after).ts == got[2 * n + 2].ts


def test_the_settings_take_the_jump_bound_of_daily_bars():
    cfg = S.TraderSettings.from_env(ENV).engine_config()
    assert cfg.bar_seconds == 86400 and cfg.max_bar_jump_ratio == pytest.approx(0.5, abs=1e-12)
    assert S.TraderSettings.from_env(dict(ENV, QR_MAX_BAR_JUMP_RATIO="0.3")).engine_config().max_bar_jump_ratio == 0.3


def runtime(clock, **env):
    s = S.TraderSettings.from_env(dict(ENV, **env))
    eng = S.build_engine(s, Script(lambda i: 0.9))
    m = TraderMetrics(s.strategy, s.role, s.symbol, symbols=s.symbols)
    return S.Runtime(s, eng, None, m, S._State(m), None, monotonic=clock)


def test_a_daily_position_is_held_over_the_weekend_on_the_wall_clock_and_the_feed_is_not_stale():
    clock = Clock()
    rt = runtime(clock)
    history = daily_bars("MSFT", "2012-10-01", "2012-11-16")  # (Sandy closed the market on 10-29 and 10-30)
    bars = list(islice(S.replay_from(history, None, 86400), len(history)))

    async def go():
        for b in bars:
            await rt.on_bar(b, 0.0)
            clock.t += 1.0
        assert sess.new_york_date(rt.last_ts) == datetime(2012, 11, 16).date()  # a Friday
        assert rt.engine.live.position > 0, "the script's long was never held"
        held = rt.engine.live.position
        clock.t += 1.5  # 2.5 days of silence after Friday's close (1 s a session): Monday's close is not due yet
        assert await rt.tick() is None
        assert rt.engine.live.position == held and not rt.feed_stale
        clock.t += 1.0  # 3.5 days: past Monday's close and the max price age: stale, still held (no end of day)
        await rt.tick()
        assert rt.feed_stale and rt.engine.live.position == held

    asyncio.run(go())


def test_two_symbols_of_daily_bars_run_as_one_portfolio_with_positions_held_overnight():
    clock = Clock()
    rt = runtime(clock, QR_SYMBOLS="MSFT,AAPL")
    assert isinstance(rt.engine, Portfolio)
    feed = S.replay_from({s: daily_bars(s, "2012-01-03", "2012-06-29") for s in ("MSFT", "AAPL")}, None, 86400)
    carried = 0

    async def go():
        nonlocal carried
        for _ in range(2 * 120):
            b = next(feed)
            before = rt.engine.engines[b.symbol].live.position
            await rt.on_bar(b, 0.0)
            if before and rt.engine.engines[b.symbol].live.position == before:
                carried += 1

    asyncio.run(go())
    st = rt.engine.stats()
    assert set(st.by_symbol) == {"MSFT", "AAPL"} and all(d["trades"] > 0 for d in st.by_symbol.values()), st.by_symbol
    assert carried > 50 and st.hard_limit_breaches == 0
