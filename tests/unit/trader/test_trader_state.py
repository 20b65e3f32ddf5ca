"""Engine snapshot/restore, book fields, replay resume, runtime gates in dev mode (no Redis)."""

from __future__ import annotations

import asyncio
import itertools
import json
import math

import pytest

from quantramp.trader import server as S
from quantramp.trader.backtest import make_engine
from quantramp.trader.engine import EngineConfig
from quantramp.trader.marketdata import load_minute_bars, replay
from quantramp.trader.metrics import TraderMetrics
from quantramp.trader.state import FORMAT_VERSION, book_fields, parse_book


class Momentum:
    def p_up_one(self, x):
        return 0.9 if x[0] > 0 else 0.1


@pytest.fixture(scope="module")
def bars():
    return load_minute_bars("AAPL")


def _engine(bars, seed=7):
    return make_engine(Momentum(), EngineConfig.for_capital(10_000.0), bars, seed=seed)


def test_snapshot_is_json_exact_and_restore_continues_identically(bars):
    a, b = _engine(bars), _engine(bars)
    stream = list(itertools.islice(replay(bars, 0.0), 700))
    for bar in stream[:400]:
        a.on_bar(bar)
    snap = json.loads(json.dumps(a.snapshot()))  # through the wire format
    assert snap == a.snapshot()
    assert a.trades > 5
    b.restore(snap)
    assert b.snapshot() == a.snapshot()
    for bar in stream[400:]:
        sa, sb = a.on_bar(bar), b.on_bar(bar)
        assert (sa.order_qty, sa.fill) == (sb.order_qty, sb.fill)
    assert a.snapshot() == b.snapshot() and a.stats() == b.stats()


def test_cancel_and_flatten(bars):
    e = _engine(bars)
    it = replay(bars, 0.0)
    while not e.live.position:
        e.on_bar(next(it))
    pos = e.live.position
    e.cancel_working()
    assert e.working_qty == 0
    assert e.flatten_next(e.features and next(it).ts) == -pos
    assert e.working_qty == -pos
    step = e.on_bar(next(it))
    assert step.fill is not None and step.fill.ordered_qty == -pos


def test_book_fields_roundtrip(bars):
    e = _engine(bars)
    for bar in itertools.islice(replay(bars, 0.0), 120):
        e.on_bar(bar)
    snap = e.snapshot()
    fields = book_fields(snap, {"day_turnover_usd": 123.5, "bar_ts": "2026-07-29T15:29:00+00:00", "stage": "canary-1"})
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["format"] == str(FORMAT_VERSION)
    assert int(fields["position_qty"]) == e.live.position
    assert float(fields["pnl_usd"]) == pytest.approx(e.live.pnl())
    assert float(fields["day_pnl_usd"]) == pytest.approx(e.day_pnl())
    assert float(fields["peak_equity_usd"]) == e.peak_equity
    snap2, extra = parse_book(fields)
    assert snap2 == snap and extra["day_turnover_usd"] == 123.5 and extra["stage"] == "canary-1"
    with pytest.raises(ValueError):
        parse_book({k: v for k, v in fields.items() if k != "engine"})
    with pytest.raises(ValueError):
        parse_book(dict(fields, format="0"))


@pytest.mark.parametrize("skip", [0, 1, 389, 2339, 2340, 5000])
def test_replay_from_continues_after_the_last_booked_bar(bars, skip):
    ref = list(itertools.islice(replay(bars, 0.0), skip + 3))
    after = ref[skip - 1].ts if skip else None
    got = list(itertools.islice(S.replay_from(bars, after), 3))
    assert got == ref[skip:skip + 3]



BASE = {
    "QR_STRATEGY": "s", "QR_ROLE": "champion", "QR_MODEL_URI": "models:/m/1", "MLFLOW_TRACKING_URI": "http://x",
    "QR_CAPITAL_USD": "10000",
}


def test_pause_and_redis_settings():
    s = S.TraderSettings.from_env(BASE)
    assert s.start_paused is False and s.pause_max_latency_s == 0.1 and s.pause_window_s == 30.0 and s.redis_url == ""
    s = S.TraderSettings.from_env(dict(
        BASE, QR_START_PAUSED="true", QR_PAUSE_MAX_LATENCY_MS="50", QR_PAUSE_WINDOW_SECONDS="5",
        REDIS_URL="redis://127.0.0.1:1/0",
    ))
    assert s.start_paused and s.pause_max_latency_s == 0.05 and s.pause_window_s == 5.0
    assert s.redis_url == "redis://127.0.0.1:1/0"
    with pytest.raises(S.ConfigError, match="QR_START_PAUSED"):
        S.TraderSettings.from_env(dict(BASE, QR_START_PAUSED="maybe"))
    with pytest.raises(S.ConfigError, match="QR_PAUSE_MAX_LATENCY_MS"):
        S.TraderSettings.from_env(dict(BASE, QR_PAUSE_MAX_LATENCY_MS="0"))


def _dev_runtime(bars, **env):
    s = S.TraderSettings.from_env(dict(BASE, QR_BAR_INTERVAL_SECONDS="0", **env))
    eng = _engine(bars)
    m = TraderMetrics(s.strategy, s.role, s.symbol)
    return S.Runtime(s, eng, bars, m, S._State(m), None), m


def test_dev_mode_paused_runtime_sends_nothing_and_counts_blocked(bars):
    rt, m = _dev_runtime(bars, QR_START_PAUSED="true", QR_PAUSE_WINDOW_SECONDS="3600")
    calls = []
    submit = rt.engine.broker.submit
    rt.engine.broker.submit = lambda o: calls.append(o) or submit(o)

    async def go():
        return await rt.run(asyncio.Event(), max_bars=300)

    assert asyncio.run(go()) == 300
    assert calls == [] and rt.engine.live.position == 0 and rt.http.ready
    lab = {"strategy": "s", "role": "champion", "stage": ""}
    assert m.registry.get_sample_value("quantramp_paused", lab) == 1
    assert m.registry.get_sample_value("quantramp_orders_blocked_total", dict(lab, reason="paused")) > 0
    assert m.registry.get_sample_value("quantramp_redis_up", lab) is None  # dev mode: no durable state


def test_dev_mode_unpaused_trades_and_reports(bars):
    rt, m = _dev_runtime(bars)
    asyncio.run(rt.run(asyncio.Event(), max_bars=300))
    assert rt.engine.trades > 0 and rt.block_reason() is None
    lab = {"strategy": "s", "role": "champion", "stage": ""}
    assert m.registry.get_sample_value("quantramp_paused", lab) == 0
    assert m.registry.get_sample_value("quantramp_kill_latch", lab) == 0
    assert math.isfinite(m.registry.get_sample_value("quantramp_feed_latency_seconds", lab))


def test_dev_mode_is_logged_loudly(monkeypatch, caplog):
    monkeypatch.setattr(S, "load_model", lambda uri, tracking: Momentum())
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(BASE, QR_BAR_INTERVAL_SECONDS="0", POD_IP="127.0.0.1", QR_PORT=str(port))
    with caplog.at_level("WARNING"):
        assert S.run(env, max_bars=5) == 0
    assert any("DEV MODE" in r.getMessage() and "NO KILL SWITCH" in r.getMessage() for r in caplog.records)
