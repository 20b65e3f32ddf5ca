"""Durable trader state against a real redis-server: resume after restarts, Redis outage and recovery."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from quantramp.trader.server import replay_from, start_http
from quantramp.trader.session import new_york_date
from quantramp.trader.state import parse_book

pytestmark = pytest.mark.integration


async def drive(pod, n: int, stop: asyncio.Event | None = None) -> None:
    """Load the pod's state (first call) and feed it the next ``n`` replay bars."""
    stop = stop or asyncio.Event()
    if not pod.rt.loaded:
        assert await pod.rt.load(stop)
    it = replay_from(pod.rt.bars, pod.rt.last_ts)
    for _ in range(n):
        await pod.rt.on_bar(next(it), 0.0)


async def run_pod(make_pod, url, n):
    pod = make_pod(url)
    await drive(pod, n)
    return pod


def test_restarted_pod_resumes_exactly_and_continues_like_an_uninterrupted_one(redis_server, make_pod):
    async def scenario():
        a = await run_pod(make_pod, redis_server.url, 300)
        before = a.engine.snapshot()
        st = a.engine.stats()
        assert st.trades > 5, "the test model must trade"
        await a.close()

        b = make_pod(redis_server.url)  # the restarted pod
        assert await b.rt.load(asyncio.Event())
        assert b.engine.snapshot() == before
        assert b.engine.live.position == a.engine.live.position
        assert b.engine.stats().pnl_usd == st.pnl_usd and b.engine.stats().day_pnl_usd == st.day_pnl_usd
        assert b.engine.peak_equity == a.engine.peak_equity
        assert b.rt.last_ts == a.rt.last_ts and b.rt.day_turnover_usd == a.rt.day_turnover_usd
        await drive(b, 200)
        await b.close()

        c = make_pod(None)  # never interrupted, no Redis
        await drive(c, 500)
        assert b.engine.snapshot() == c.engine.snapshot()
        assert b.rt.last_ts == c.rt.last_ts
        return before

    before = asyncio.run(scenario())
    assert before["trades"] > 5


def test_state_survives_a_redis_crash_with_aof(redis_server, make_pod):
    async def phase1():
        a = await run_pod(make_pod, redis_server.url, 250)
        snap, day = a.engine.snapshot(), a.rt.day
        await a.close()
        return snap, day

    snap, day = asyncio.run(phase1())
    redis_server.stop(kill=True)  # crash: only the AOF (appendfsync always) survives
    redis_server.start()

    async def phase2():
        b = make_pod(redis_server.url)
        assert await b.rt.load(asyncio.Event())
        assert b.engine.snapshot() == snap
        fields = await b.store.client.hgetall(b.keys.book(day))
        book, extra = parse_book(fields)
        assert book == snap
        assert int(fields["position_qty"]) == snap["live"]["position"]
        assert float(fields["peak_equity_usd"]) == snap["peak_equity"]
        assert await b.store.client.get(b.keys.current) == day
        await b.close()

    asyncio.run(phase2())


def test_book_keys_per_trading_day(redis_server, make_pod):
    async def scenario():
        a = await run_pod(make_pod, redis_server.url, 400)  # 390 bars a session: crosses into day 2
        keys = sorted(await a.store.client.keys("quantramp:trading:aapl-it:*"))
        await a.close()
        return keys, a.rt.day

    keys, day = asyncio.run(scenario())
    assert keys == [
        "quantramp:trading:aapl-it:challenger:2026-07-29:book",
        "quantramp:trading:aapl-it:challenger:2026-07-30:book",
        "quantramp:trading:aapl-it:challenger:current",
        "quantramp:trading:aapl-it:challenger:intent",  # write-ahead of the last order sent (D12)
    ]
    assert day == "2026-07-30"


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_redis_outage_refuses_orders_flattens_not_ready_and_recovers(redis_server, make_pod):
    async def scenario():
        pod = make_pod(redis_server.url)
        srv = start_http("127.0.0.1", 0, pod.http)
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        stop = asyncio.Event()
        try:
            assert await pod.rt.load(stop)
            it = replay_from(pod.rt.bars)
            # trade until a position is open
            for _ in range(600):
                await pod.rt.on_bar(next(it), 0.0)
                if pod.engine.live.position:
                    break
            assert pod.engine.live.position != 0
            assert (await asyncio.to_thread(_get, base + "/readyz"))[0] == 200
            assert pod.metric("quantramp_redis_up") == 1

            redis_server.stop(kill=True)
            await pod.rt.on_bar(next(it), 0.0)  # the write fails here
            assert not pod.rt.redis_up
            code, body = await asyncio.to_thread(_get, base + "/readyz")
            assert code == 503 and "Redis unreachable" in body
            assert pod.metric("quantramp_redis_up") == 0
            assert pod.rt.block_reason() == "redis_down"

            outage_calls = len(pod.calls)
            for _ in range(30):  # flatten what it can, and nothing else
                await pod.rt.on_bar(next(it), 0.0)
            assert pod.engine.live.position == 0
            for _, qty, pos in pod.calls[outage_calls:]:
                assert pos != 0 and abs(pos + qty) < abs(pos), "only flattening orders during the outage"
            n_flat = len(pod.calls)
            for _ in range(60):
                await pod.rt.on_bar(next(it), 0.0)
                assert pod.engine.working_qty == 0
            assert len(pod.calls) == n_flat, "no order while Redis is down"
            blocked = pod.metrics.registry.get_sample_value(
                "quantramp_orders_blocked_total",
                {"strategy": "aapl-it", "role": "challenger", "stage": "canary-1", "reason": "redis_down"},
            )
            assert blocked >= 1

            recover = asyncio.create_task(pod.rt._recover(stop))
            redis_server.start()
            deadline = time.monotonic() + 10
            while not pod.rt.redis_up and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert pod.rt.redis_up
            assert pod.metric("quantramp_redis_up") == 1
            assert (await asyncio.to_thread(_get, base + "/readyz"))[0] == 200
            # the book in Redis is the pod's state again
            fields = await pod.store.client.hgetall(pod.keys.book(pod.rt.day))
            assert parse_book(fields)[0] == pod.engine.snapshot()
            # and it trades again
            before = len(pod.calls)
            for _ in range(200):
                await pod.rt.on_bar(next(it), 0.0)
            assert len(pod.calls) > before
            fields = await pod.store.client.hgetall(pod.keys.book(new_york_date(pod.rt.last_ts).isoformat()))
            assert parse_book(fields)[0] == pod.engine.snapshot()
            stop.set()
            await recover
        finally:
            srv.shutdown()
            srv.server_close()
            await pod.close()

    asyncio.run(scenario())


def test_pod_started_while_redis_is_down_waits_then_loads(redis_server, make_pod):
    async def scenario():
        a = await run_pod(make_pod, redis_server.url, 150)
        snap = a.engine.snapshot()
        await a.close()
        redis_server.stop()
        b = make_pod(redis_server.url)
        stop = asyncio.Event()
        loading = asyncio.create_task(b.rt.load(stop))
        await asyncio.sleep(1.0)
        assert not loading.done() and not b.http.ready
        assert "waiting for Redis" in b.http.not_ready_reason
        await asyncio.to_thread(redis_server.start)
        assert await asyncio.wait_for(loading, 10)
        assert b.engine.snapshot() == snap
        await b.close()

    asyncio.run(scenario())


def test_run_with_redis_url_end_to_end(redis_server, monkeypatch):
    """The pod entry point (server.run) with REDIS_URL: writes its book, and a second run resumes it."""
    import socket

    from quantramp.trader import server

    class Momentum:
        def p_up_one(self, x):
            return 0.9 if x[0] > 0 else 0.1

    monkeypatch.setattr(server, "load_model", lambda uri, tracking: Momentum())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "QR_STRATEGY": "e2e-lite", "QR_NAMESPACE": "trading", "QR_ROLE": "champion", "QR_MODEL_URI": "models:/m/1",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1", "QR_CAPITAL_USD": "10000", "QR_BAR_INTERVAL_SECONDS": "0",
        "POD_IP": "127.0.0.1", "QR_PORT": str(port), "REDIS_URL": redis_server.url,
    }
    assert server.run(env, max_bars=100) == 0

    async def read():
        from redis.asyncio import Redis

        r = Redis.from_url(redis_server.url, decode_responses=True)
        day = await r.get("quantramp:trading:e2e-lite:champion:current")
        fields = await r.hgetall(f"quantramp:trading:e2e-lite:champion:{day}:book")
        await r.aclose()
        return fields

    first = asyncio.run(read())
    assert json.loads(first["engine"])["bars"] == 100
    assert server.run(env, max_bars=50) == 0
    second = asyncio.run(read())
    assert json.loads(second["engine"])["bars"] == 150
