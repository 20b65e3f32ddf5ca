"""Several symbols in one trader (trader/portfolio.py): one engine per symbol under one governor,
the combined loss cap across symbols (seed 000: "$30 combined" for MSFT + AAPL at $10 each),
state, allocation and the runtime's routing."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pandas as pd
import pytest

from quantramp.trader import governor as gov
from quantramp.trader import server as S
from quantramp.trader.certification.pod import Script, session
from quantramp.trader.engine import Engine
from quantramp.trader.marketdata import Bars
from quantramp.trader.metrics import TraderMetrics
from quantramp.trader.portfolio import Portfolio
from test_trader_runtime_safety import MemStore

#: two symbols at 1,000 USD each, the combined daily loss cap 30 USD, drawdown limits out of the way
ENV = {
    "QR_STRATEGY": "pair", "QR_ROLE": "challenger", "QR_MODEL_URI": "models:/pair/1",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:1", "QR_CAPITAL_USD": "2000", "QR_SYMBOLS": "MSFT,AAPL",
    "QR_BARS_SOURCE": "file", "QR_BARS_URL": "/nonexistent/{symbol}.csv", "QR_BAR_INTERVAL_SECONDS": "0",
    "QR_MAX_DAILY_LOSS_USD": "30", "QR_MAX_POSITION_USD": "400", "QR_MAX_ORDER_USD": "400",
    "QR_DRAWDOWN_SOFT_USD": "500", "QR_DRAWDOWN_REDUCE_USD": "600", "QR_DRAWDOWN_HALT_USD": "700",
    "QR_SIZING_RISK_FRACTION": "1.0",
}
DAY = "2026-07-29"
#: a quiet start (the features and ATR warm up; both go long), then a slide of 0.2 % a bar
SLIDE = [round(10.0 + 0.01 * (i % 2), 2) for i in range(60)] + [round(10.0 * 0.998 ** k, 4) for k in range(1, 80)]


def settings(**env: str) -> S.TraderSettings:
    return S.TraderSettings.from_env({**ENV, **env})


def portfolio(**env: str) -> Portfolio:
    p = S.build_engine(settings(**env), Script(lambda i: 0.9))
    assert isinstance(p, Portfolio)
    return p


def tape(symbols=("MSFT", "AAPL"), prices=SLIDE):
    """The symbols' bars interleaved in time, each tagged with its symbol (as the pod's replay does)."""
    per = {s: session(DAY, prices) for s in symbols}
    return [S.replace(b, symbol=s) for i in range(len(prices)) for s, b in ((s, per[s][i]) for s in symbols)]


def test_settings_take_several_symbols_and_split_the_capital_equally():
    s = settings()
    assert s.symbols == ("MSFT", "AAPL") and s.symbol == "MSFT"
    assert [s.engine_config(x).capital_usd for x in s.symbols] == [1000.0, 1000.0]
    assert s.engine_config().capital_usd == 2000.0
    with pytest.raises(S.ConfigError, match="MSFT named twice"):
        settings(QR_SYMBOLS="MSFT,AAPL,MSFT")


def test_one_governor_with_the_roles_limits_for_every_symbol():
    p = portfolio()
    g = {id(e.governor) for e in p.engines.values()} | {id(p.governor)}
    assert len(g) == 1
    assert p.limits.max_daily_loss_usd == 30.0 and p.limits.max_position_usd == 400.0
    assert p.limits.capital_usd == 2000.0


def test_the_combined_loss_cap_halts_every_symbol_when_neither_alone_reaches_it():
    p = portfolio()
    halted_at = None
    for i, bar in enumerate(tape()):
        p.on_bar(bar)
        if halted_at is None and p.governor_state.trading_state == gov.HALTED:
            halted_at = i
            own = {s: e.day_pnl() for s, e in p.engines.items()}
            positions = {s: e.live.position for s, e in p.engines.items()}
    assert halted_at is not None, "the combined daily loss never halted the portfolio"
    assert p.governor_state.halt_reason == gov.Reason.DAILY_LOSS_LIMIT.value
    assert all(q > 0 for q in positions.values()), f"both symbols were long when it halted: {positions}"
    # neither symbol alone was at the cap: the sum of the two is what halted them
    assert all(-30.0 < v < 0.0 for v in own.values()), own
    assert sum(own.values()) <= -30.0 + 1e-6
    # both were flattened (HALTED: only flattening orders), and stay flat on the long signal
    assert all(e.live.position == 0 for e in p.engines.values())
    assert p.stats().governor_denials.get(gov.Reason.TRADING_HALTED.value, 0) > 0
    assert p.stats().governor_halts == {gov.Reason.DAILY_LOSS_LIMIT.value: 1}


def test_without_the_shared_totals_the_same_tape_does_not_halt():
    """The control switched off: two standalone engines (each its own governor and day P&L, the same
    30 USD cap) on the same bars never halt: the combined cap is what the test above shows."""
    s = settings()
    alone = {x: S.make_engine(Script(lambda i: 0.9), s.engine_config(x), None, seed=1) for x in s.symbols}
    for e in alone.values():
        e.limits = s.engine_config().limits.resolved(1000.0)
    for bar in tape():
        alone[bar.symbol].on_bar(bar)
    assert all(e.governor_state.daily_loss_date is None for e in alone.values())


def test_an_engine_that_has_not_seen_today_counts_no_day_pnl():
    """Yesterday's loss of the symbol whose first bar of today has not come yet never counts
    toward today's cap (it would halt today on yesterday's loss)."""
    p = portfolio()
    for bar in tape():
        p.on_bar(bar)
    yesterday = sum(e.day_pnl() for e in p.engines.values())
    assert yesterday < -20.0
    nxt = [S.replace(b, symbol="MSFT") for b in session("2026-07-30", [9.0, 9.0])]
    p.on_bar(nxt[0])
    equity, day = p.totals()
    assert day == pytest.approx(p.engines["MSFT"].day_pnl(), abs=1e-9)
    assert p.governor_state.trading_date == "2026-07-30"
    assert math.isfinite(equity)


def test_snapshot_restore_round_trip_keeps_one_governor():
    p = portfolio()
    bars = tape()
    for bar in bars[:200]:
        p.on_bar(bar)
    snap = p.snapshot()
    q = portfolio()
    q.restore(snap)
    assert len({id(e.governor) for e in q.engines.values()} | {id(q.governor)}) == 1
    assert len({id(e.governor_state) for e in q.engines.values()}) == 1
    for bar in bars[200:]:
        p.on_bar(bar)
        q.on_bar(bar)
    a, b = p.stats(), q.stats()
    assert a.pnl_usd == pytest.approx(b.pnl_usd, abs=1e-9)
    assert a.trading_state == b.trading_state and a.by_symbol.keys() == b.by_symbol.keys()
    with pytest.raises(ValueError, match="trades"):
        portfolio(QR_SYMBOLS="MSFT,IBM").restore(snap)
    with pytest.raises(ValueError, match="several-symbol"):
        q.restore(p.engines["MSFT"].snapshot())


def test_reallocation_splits_the_new_capital_and_keeps_the_usd_drawdown():
    p = portfolio()
    for bar in tape()[:150]:
        p.on_bar(bar)
    dd = p.governor_state.drawdown_usd
    p.governor.denials["price_collar"] += 3  # counters survive the new limits
    denials = dict(p.stats().governor_denials)
    p.reallocate(4000.0, settings().limits_at(4000.0, 400.0, 400.0, 30.0))
    assert p.stats().governor_denials == denials
    assert [e.config.capital_usd for e in p.engines.values()] == [2000.0, 2000.0]
    assert p.limits.capital_usd == 4000.0 and p.config.capital_usd == 4000.0
    assert p.governor_state.drawdown_usd == pytest.approx(dd, abs=1e-6)
    assert len({id(e.governor) for e in p.engines.values()} | {id(p.governor)}) == 1


def test_stats_pool_the_symbols_and_break_them_down():
    p = portfolio()
    for bar in tape()[:130]:
        p.on_bar(bar)
    st = p.stats()
    per = {s: e.stats() for s, e in p.engines.items()}
    assert st.pnl_usd == pytest.approx(sum(x.pnl_usd for x in per.values()), abs=1e-9)
    assert st.trades == sum(x.trades for x in per.values()) and st.trades > 0
    assert set(st.by_symbol) == {"MSFT", "AAPL"}
    assert st.bars == 130


def test_metrics_export_the_role_and_each_symbol():
    p = portfolio()
    m = TraderMetrics("pair", "challenger", "MSFT", symbols=("MSFT", "AAPL"))
    for bar in tape()[:130]:
        m.observe(p.on_bar(bar), p.stats())
    text = m.render().decode()
    for sym in ("MSFT", "AAPL"):
        assert f'quantramp_symbol_pnl_usd{{role="challenger",stage="",strategy="pair",symbol="{sym}"}}' in text
        assert f'symbol="{sym}"' in text.split("quantramp_position_notional_usd")[-1]
    assert "quantramp_symbol_trades_total" in text


def test_replay_merges_the_symbols_in_time_order():
    def bars(sym, start, n):
        ts = (pd.date_range(start, periods=n, freq="1min", tz="UTC").tz_localize(None)).to_numpy("datetime64[ns]")
        c = np.full(n, 10.0)
        return Bars(sym, ts, c, c, c, c, np.full(n, 100.0))
    got = S.replay_from({"MSFT": bars("MSFT", "2026-07-29 13:30", 3), "AAPL": bars("AAPL", "2026-07-29 13:31", 3)})
    first = [next(got) for _ in range(6)]
    assert [(b.ts.minute, b.symbol) for b in first] == [(30, "MSFT"), (31, "MSFT"), (31, "AAPL"), (32, "MSFT"),
                                                        (32, "AAPL"), (33, "AAPL")]
    after = S.replay_from({"MSFT": bars("MSFT", "2026-07-29 13:30", 3), "AAPL": bars("AAPL", "2026-07-29 13:31", 3)},
                          first[2].ts)
    assert [(b.ts.minute, b.symbol) for b in (next(after), next(after))] == [(32, "MSFT"), (32, "AAPL")]


def test_the_runtime_routes_bars_and_flattens_every_symbol_on_a_kill():
    from quantramp.trader import killswitch as ks

    s = settings()
    p = S.build_engine(s, Script(lambda i: 0.9))
    m = TraderMetrics(s.strategy, s.role, s.symbol, symbols=s.symbols)
    rt = S.Runtime(s, p, None, m, S._State(m), None)

    async def go():
        for bar in tape()[:130]:
            await rt.on_bar(bar, 0.0)
        assert all(e.live.position > 0 for e in p.engines.values())
        await rt.on_kill(ks.KillCommand(ks.KILL, reason="test", flatten=True), 0.0)
        assert all(e.working_qty == -e.live.position for e in p.engines.values())
        for bar in tape()[130:134]:
            await rt.on_bar(bar, 0.0)
        assert all(e.live.position == 0 for e in p.engines.values())

    asyncio.run(go())
    assert isinstance(next(iter(p.engines.values())), Engine)


def test_the_durable_book_of_several_symbols_sums_them_and_round_trips():
    from quantramp.trader.state import book_fields, parse_book

    p = portfolio()
    for bar in tape()[:130]:
        p.on_bar(bar)
    fields = book_fields(p.snapshot(), {"bar_ts": "x"})
    st = p.stats()
    assert float(fields["pnl_usd"]) == pytest.approx(st.pnl_usd, abs=1e-6)
    assert int(fields["position_qty"]) == sum(abs(e.live.position) for e in p.engines.values()) > 0
    assert json.loads(fields["positions"]) == {s: e.live.position for s, e in p.engines.items()}
    snap, extra = parse_book(fields)
    q = portfolio()
    q.restore(snap)
    assert q.stats().pnl_usd == pytest.approx(st.pnl_usd, abs=1e-9) and extra["bar_ts"] == "x"


def test_a_pod_whose_symbols_changed_under_its_book_refuses_it_with_the_fix():
    """A book saved by MSFT+AAPL is never restored into a pod of other symbols (nor of one), and the reverse:
    the pod says which book, what it trades and what to do (never a KeyError, never a guessed book)."""

    p = portfolio()
    for bar in tape()[:20]:
        p.on_bar(bar)
    several = ("2026-07-29", p.snapshot(), {"capital_usd": 2000.0})
    one = ("2026-07-29", p.engines["MSFT"].snapshot(), {"capital_usd": 2000.0})

    def load(env, saved):
        s = settings(**env)
        eng = S.build_engine(s, Script(lambda i: 0.9))
        m = TraderMetrics(s.strategy, s.role, s.symbol, symbols=s.symbols)
        store = MemStore()  # the in-memory StateStore of the restart tests
        store.saved = saved
        rt = S.Runtime(s, eng, None, m, S._State(m), store)
        return asyncio.run(rt.load(asyncio.Event()))

    with pytest.raises(ValueError, match=r"book:2026-07-29 trades AAPL, MSFT, this pod MSFT, IBM: restore the strategy's symbols"):
        load({"QR_SYMBOLS": "MSFT,IBM"}, several)
    with pytest.raises(ValueError, match="trades AAPL, MSFT, this pod MSFT:"):
        load({"QR_SYMBOLS": "MSFT"}, several)
    with pytest.raises(ValueError, match="trades one symbol, this pod MSFT, AAPL"):
        load({}, one)
    assert load({}, several) is True  # the same symbols: restored
