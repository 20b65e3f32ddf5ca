"""Trader runtime safety fixes from the independent risk review (issue 12): D10, D11, resume (D1).

Dev-mode runtimes (no Redis) driven bar by bar with synthetic bars and an always-long model;
each test fails on the runtime before the fix (commit 232021b).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from quantramp.trader import killswitch as ks
from quantramp.trader import server as S
from quantramp.trader.broker import ImpactModel, SimBroker
from quantramp.trader.engine import Engine, EngineConfig
from quantramp.trader.governor import RiskLimits, TradingState
from quantramp.trader.marketdata import Bar
from quantramp.trader.metrics import TraderMetrics

ZERO = ImpactModel(sigma_daily=0.0, adv_shares=1e9)
BASE = {
    "QR_STRATEGY": "s", "QR_ROLE": "champion", "QR_MODEL_URI": "models:/m/1", "MLFLOW_TRACKING_URI": "http://x",
    "QR_CAPITAL_USD": "10000", "QR_BAR_INTERVAL_SECONDS": "0",
}
START = datetime(2026, 7, 29, 18, 30, tzinfo=timezone.utc)  # 14:30 New York


class Always:
    def p_up_one(self, x):
        return 0.9


def runtime(limits=None, **env):
    s = S.TraderSettings.from_env(dict(BASE, **env))
    limits = limits or RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=1_000.0)
    eng = Engine(EngineConfig(capital_usd=10_000.0, limits=limits, sizing=None), Always(), SimBroker(ZERO, seed=0), ZERO)
    m = TraderMetrics(s.strategy, s.role, s.symbol)
    return S.Runtime(s, eng, None, m, S._State(m), None)


def feed(rt, start, prices):
    async def go():
        for i, p in enumerate(prices):
            await rt.on_bar(Bar(start + timedelta(minutes=i), p, p + 0.01, p - 0.01, p, 1e6), 0.0)
    asyncio.run(go())


def sent(rt):
    calls = []
    submit = rt.engine.broker.submit
    rt.engine.broker.submit = lambda o: calls.append(o) or submit(o)
    return calls


# -- D10: a kill without flatten, or a closed pause gate, never withholds the end-of-day flatten ---
def test_kill_without_flatten_still_flattens_at_the_close():
    rt = runtime()
    feed(rt, START, [100.0] * 40)  # 14:30 .. 15:09: long
    assert rt.engine.live.position > 0
    calls = sent(rt)
    asyncio.run(rt.on_kill(ks.KillCommand(ks.KILL, reason="test", flatten=False), 0.0))
    feed(rt, START + timedelta(minutes=40), [100.0] * 50)  # 15:10 .. 15:59
    assert rt.engine.live.position == 0
    assert calls and all(o.closing and o.qty < 0 for o in calls)  # only the flatten was sent


def test_closed_pause_gate_still_flattens_at_the_close():
    rt = runtime()
    feed(rt, START, [100.0] * 40)
    assert rt.engine.live.position > 0
    rt.gate.paused = True
    feed(rt, START + timedelta(minutes=40), [100.0] * 50)
    assert rt.engine.live.position == 0


def test_kill_still_withholds_entries():
    rt = runtime()
    asyncio.run(rt.on_kill(ks.KillCommand(ks.KILL, reason="test", flatten=False), 0.0))
    calls = sent(rt)
    feed(rt, START, [100.0] * 40)
    assert calls == [] and rt.engine.live.position == 0


# -- D11: one equity peak; a capital change on restart moves it ----------------------------------
def test_engine_peak_is_the_governors_peak():
    rt = runtime()
    feed(rt, START, [100.0] * 31 + [101.0, 102.0, 101.5])
    eng = rt.engine
    assert eng.peak_equity == eng.governor_state.peak_equity_usd > 10_000.0


@pytest.mark.parametrize("new_capital", [5_000.0, 20_000.0])
def test_capital_change_on_restart_keeps_the_usd_drawdown(new_capital):
    rt = runtime()
    feed(rt, START, [100.0] * 31 + [102.0, 99.0, 98.5])
    eng = rt.engine
    dd = eng.governor_state.peak_equity_usd - eng.equity
    assert dd > 100.0
    snap = eng.snapshot()
    eng2 = Engine(EngineConfig(capital_usd=new_capital, limits=eng.config.limits, sizing=None), Always(),
                  SimBroker(ZERO, seed=0), ZERO)
    eng2.restore(snap)
    eng2.rebase_capital(new_capital - 10_000.0)
    assert eng2.peak_equity - eng2.equity == pytest.approx(dd, abs=1e-6)
    assert eng2.governor_state.peak_equity_usd - eng2.governor_state.equity_usd == pytest.approx(dd, abs=1e-6)
    eng2.on_bar(Bar(START + timedelta(minutes=34), 98.5, 98.51, 98.49, 98.5, 1e6))
    assert eng2.governor_state.trading_state != TradingState.HALTED
    assert eng2.governor_state.drawdown_usd == pytest.approx(dd, abs=1.0)


def test_runtime_load_rebases_the_governor_peak_on_a_capital_cut():
    rt = runtime()
    feed(rt, START, [100.0] * 31 + [102.0, 99.0, 98.5])
    snap = rt.engine.snapshot()
    dd = rt.engine.governor_state.peak_equity_usd - rt.engine.equity
    rt2 = runtime(QR_CAPITAL_USD="5000")
    rt2.engine = Engine(EngineConfig(capital_usd=5_000.0, limits=rt.engine.config.limits, sizing=None), Always(),
                        SimBroker(ZERO, seed=0), ZERO)
    rt2.store = MemStore()  # defined below with the write-ahead tests
    rt2.store.saved = ("2026-07-29", snap, {"capital_usd": 10_000.0, "bar_ts": START.isoformat()})
    asyncio.run(rt2.load(asyncio.Event()))
    assert rt2.engine.governor_state.peak_equity_usd - rt2.engine.equity == pytest.approx(dd, abs=1e-6)


# -- resume: the only way out of a drawdown halt, explicit and recorded -------------------------------
def test_resume_message_lifts_a_drawdown_halt_and_is_recorded():
    lim = RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=1_000.0,
                     drawdown_halt_usd=150.0)
    rt = runtime(limits=lim)
    feed(rt, START, [100.0] * 31 + [99.0, 98.0, 97.0, 96.0, 95.5, 95.5])
    assert rt.engine.governor_state.halt_reason == "drawdown_halt"
    cmd = ks.parse('{"action": "resume", "by": "oncall", "reason": "checked", "id": "r1"}')
    assert rt.engine.governor_state.trading_state == TradingState.HALTED
    rec = asyncio.run(rt.on_resume(cmd, 1_800_000_000.0))
    assert rec["by"] == "oncall" and rec["halt_reason"] == "drawdown_halt"
    assert rt.engine.governor_state.trading_state == TradingState.ACTIVE
    assert rt.engine.snapshot()["state"]["governor_state"]["resumes"][-1]["reason"] == "checked"
    other = ks.parse('{"action": "resume", "by": "x", "role": "challenger"}')
    assert asyncio.run(rt.on_resume(other, 0.0)) is None


def test_resume_needs_a_name_and_leaves_the_kill_latch_alone():
    with pytest.raises(ks.BadKillMessage):
        ks.parse('{"action": "resume"}')
    latch = ks.KillLatch()
    latch.apply(ks.KillCommand(ks.KILL, reason="x"))
    assert not latch.apply(ks.parse('{"action": "resume", "by": "a"}')) and latch.engaged


# -- D12 / D13: write-ahead of the order intent; a restart never re-sends, and reconciles first ----------
class MemStore:
    """In-memory stand-in for StateStore (the calls Runtime makes), shared across a 'restart'."""

    class K:
        @staticmethod
        def book(day):
            return f"book:{day}"

    keys = K()

    def __init__(self):
        self.saved = None
        self.intent = None
        self.crash_next_save = False

    async def load(self):
        return self.saved

    async def read_kill(self):
        return None

    async def read_intent(self):
        return self.intent

    async def write_intent(self, order_id, symbol, qty, closing):
        self.intent = {"id": order_id, "symbol": symbol, "qty": qty, "closing": closing}

    async def save(self, day, snap, extra):
        if self.crash_next_save:
            raise SystemExit("crash between the fill and the write")
        import json
        self.saved = (day, json.loads(json.dumps(snap)), json.loads(json.dumps(extra)))
        return None

    async def ack(self, body):
        pass


class RecordBroker(SimBroker):
    """A SimBroker standing for the broker of record (its book outlives the pod process)."""

    system_of_record = True


def pod(store, broker):
    s = S.TraderSettings.from_env(dict(BASE, REDIS_URL="redis://127.0.0.1:1/0"))
    lim = RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=1_000.0)
    eng = Engine(EngineConfig(capital_usd=10_000.0, limits=lim, sizing=None), Always(), broker, ZERO)
    m = TraderMetrics(s.strategy, s.role, s.symbol)
    rt = S.Runtime(s, eng, None, m, S._State(m), store)
    sent = []
    submit = broker.submit
    broker.submit = lambda o: sent.append(o.order_id) or submit(o)
    return rt, sent


def bars_from(i0, n, price=100.0):
    return [Bar(START + timedelta(minutes=i), price, price + 0.01, price - 0.01, price, 1e6) for i in range(i0, i0 + n)]


@pytest.mark.parametrize("of_record", [True, False])
def test_crash_between_fill_and_write_never_resends_the_order(of_record):
    store = MemStore()
    broker = (RecordBroker if of_record else SimBroker)(ZERO, seed=0)
    rt, sent = pod(store, broker)

    async def first_life():
        assert await rt.load(asyncio.Event())
        for b in bars_from(0, 40):
            if rt.engine.next_order() is not None:  # the next bar sends it: crash after the fill
                store.crash_next_save = True
                with pytest.raises(SystemExit):
                    await rt.on_bar(b, 0.0)
                return b
            await rt.on_bar(b, 0.0)
        raise AssertionError("the pod never decided an order")

    crash_bar = asyncio.run(first_life())
    assert len(sent) == 1 and store.intent["id"] == sent[0]
    filled = broker.positions().get("AAPL", 0)
    assert filled > 0  # the order reached the broker and filled; the book in the store predates it
    store.crash_next_save = False

    # restart: same store; the broker of record keeps its book, a local SimBroker starts empty
    broker2 = broker if of_record else SimBroker(ZERO, seed=0)
    rt2, sent2 = pod(store, broker2)

    async def second_life():
        assert await rt2.load(asyncio.Event())
        for b in bars_from(int((crash_bar.ts - START).total_seconds() // 60), 5):
            await rt2.on_bar(b, 0.0)

    asyncio.run(second_life())
    assert sent[0] not in sent2  # never re-sent
    assert rt2.engine.live.position == broker2.positions().get("AAPL", 0)  # reconciled before trading
    if of_record:
        assert rt2.engine.live.position == filled and rt2.engine.reconciled_shares == filled


def test_order_ids_are_fixed_at_the_decision_and_survive_a_restore():
    rt = runtime()
    feed(rt, START, [100.0] * 31)
    o = rt.engine.next_order()
    assert o is not None and o.order_id.startswith("AAPL-")
    eng2 = Engine(rt.engine.config, Always(), SimBroker(ZERO, seed=0), ZERO)
    eng2.restore(rt.engine.snapshot())
    assert eng2.next_order().order_id == o.order_id


# -- D8: the end-of-day flatten and the staleness run on the wall clock too ---------------------------
class FakeClock:
    def __init__(self):
        self.t = 1_000.0

    def __call__(self):
        return self.t


def paced_runtime(clock, store=None, **env):
    s = S.TraderSettings.from_env(dict(BASE, QR_BAR_INTERVAL_SECONDS="60", **env))
    lim = RiskLimits(max_order_usd=10_000.0, max_position_usd=5_000.0, max_daily_loss_usd=1_000.0)
    eng = Engine(EngineConfig(capital_usd=10_000.0, limits=lim, sizing=None), Always(), SimBroker(ZERO, seed=0), ZERO)
    m = TraderMetrics(s.strategy, s.role, s.symbol)
    return S.Runtime(s, eng, None, m, S._State(m), store, monotonic=clock)


def test_silent_feed_at_the_close_is_flattened_on_the_wall_clock():
    clock = FakeClock()
    rt = paced_runtime(clock)
    start = datetime(2026, 7, 29, 19, 0, tzinfo=timezone.utc)  # 15:00 New York

    async def go():
        for i in range(50):  # 15:00 .. 15:49, then the feed goes silent
            await rt.on_bar(Bar(start + timedelta(minutes=i), 100.0, 100.01, 99.99, 100.0, 1e6), 0.0)
            clock.t += 60.0
        assert rt.engine.live.position > 0
        clock.t += 60.0 * 2  # 15:52: silent but before the flatten window
        assert await rt.tick() is None and rt.engine.live.position > 0
        clock.t += 60.0 * 4  # 15:56 on the wall clock
        return await rt.tick()

    res = asyncio.run(go())
    assert res is not None and rt.engine.live.position == 0 and res.fill.filled_qty < 0


def test_silent_feed_is_reported_stale_and_a_bar_clears_it():
    clock = FakeClock()
    rt = paced_runtime(clock)
    start = datetime(2026, 7, 29, 15, 0, tzinfo=timezone.utc)  # 11:00 New York

    async def go():
        for i in range(35):
            await rt.on_bar(Bar(start + timedelta(minutes=i), 100.0, 100.01, 99.99, 100.0, 1e6), 0.0)
            clock.t += 60.0
        assert rt.http.ready
        clock.t += 120.0  # 3 minutes of silence (> 90 s max price age)
        await rt.tick()
        assert rt.feed_stale and not rt.http.ready and "feed" in rt.http.not_ready_reason
        assert rt.engine.live.position > 0  # mid-session: stale is reported, the position is not dumped
        await rt.on_bar(Bar(start + timedelta(minutes=38), 100.0, 100.01, 99.99, 100.0, 1e6), 0.0)
        assert not rt.feed_stale and rt.http.ready

    asyncio.run(go())


def test_pod_settings_carry_bar_length_jump_bound_and_sec_fee():
    s = S.TraderSettings.from_env(dict(BASE, QR_BAR_SECONDS="300", QR_MAX_BAR_JUMP_RATIO="0.2", QR_SEC_FEE_RATE="0"))
    cfg = s.engine_config()
    assert cfg.bar_seconds == 300 and cfg.max_bar_jump_ratio == 0.2 and s.fee_schedule().sec_fee_rate == 0.0
    d = S.TraderSettings.from_env(BASE)
    assert d.engine_config().bar_seconds == 60 and d.fee_schedule().exchange_per_share > 0  # all-in by default
    with pytest.raises(S.ConfigError, match="QR_BAR_SECONDS"):
        S.TraderSettings.from_env(dict(BASE, QR_BAR_SECONDS="61.5"))


# -- D2: a single-trade limit below one share is reported -------------------------------------------------
def test_seed_profile_below_one_share_is_reported_once(caplog):
    s = S.TraderSettings.from_env(dict(BASE, QR_CAPITAL_USD="1000", QR_RISK_PROFILE="seed"))
    eng = Engine(s.engine_config(), Always(), SimBroker(ZERO, seed=0), ZERO)
    m = TraderMetrics(s.strategy, s.role, s.symbol)
    rt = S.Runtime(s, eng, None, m, S._State(m), None)
    with caplog.at_level("ERROR"):
        feed(rt, START, [230.0] * 3)
    msgs = [r.getMessage() for r in caplog.records if "single-trade limit" in r.getMessage()]
    assert len(msgs) == 1 and "50.00 USD" in msgs[0]
    rt2 = runtime()  # $10,000 capital defaults: a share of $100 fits
    with caplog.at_level("ERROR"):
        caplog.clear()
        feed(rt2, START, [100.0] * 3)
    assert not [r for r in caplog.records if "single-trade limit" in r.getMessage()]


def test_crash_after_the_write_ahead_but_before_the_broker_loses_no_order():
    """The intent was written, then the process died before the broker saw the order: the broker of
    record does not know the id, so the restarted pod sends it (once, same id) instead of losing it."""
    store = MemStore()
    broker = RecordBroker(ZERO, seed=0)
    rt, sent = pod(store, broker)
    real_submit = broker.submit

    def dying(order):
        raise SystemExit("crash before the broker got the order")

    async def first_life():
        assert await rt.load(asyncio.Event())
        for b in bars_from(0, 40):
            if rt.engine.next_order() is not None:
                broker.submit = dying
                with pytest.raises(SystemExit):
                    await rt.on_bar(b, 0.0)
                return b
            await rt.on_bar(b, 0.0)
        raise AssertionError("the pod never decided an order")

    crash_bar = asyncio.run(first_life())
    intent = store.intent["id"]
    assert broker.positions() == {} and sent == []
    broker.submit = real_submit
    rt2, sent2 = pod(store, broker)

    async def second_life():
        assert await rt2.load(asyncio.Event())
        for b in bars_from(int((crash_bar.ts - START).total_seconds() // 60), 3):
            await rt2.on_bar(b, 0.0)

    asyncio.run(second_life())
    assert sent2.count(intent) == 1  # sent once after the restart: not lost, not repeated
    assert rt2.engine.live.position == broker.positions().get("AAPL", 0) > 0
