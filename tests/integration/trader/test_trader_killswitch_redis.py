"""Kill switch against a real redis-server: pub/sub kill, ack, no order after the ack, latch across restarts."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from quantramp.trader import killswitch as ks

pytestmark = pytest.mark.integration

INTERVAL = "0.005"  # paced bars, so the kill lands while the pod is trading


async def wait_for(pred, timeout=10.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step)
    return pred()


def test_kill_blocks_orders_after_ack_and_latch_survives_restart(redis_server, make_pod):
    async def scenario():
        op = Redis.from_url(redis_server.url, decode_responses=True)  # the operator's client
        a = make_pod(redis_server.url, QR_BAR_INTERVAL_SECONDS=INTERVAL)
        stop = asyncio.Event()
        task = asyncio.create_task(a.rt.run(stop))
        assert await wait_for(lambda: len(a.calls) >= 3), "the pod must be trading before the kill"

        cmd = await ks.engage(op, a.keys, reason="drill", flatten=False, id="k-1")
        ack = await ks.wait_ack(op, a.keys, "challenger", "k-1")
        assert ack["action"] == "kill" and ack["reason"] == "drill" and ack["role"] == "challenger"
        assert ack["sent_at"] == cmd.sent_at and 0 <= ack["latency_s"] < 1.0
        assert ack["received_at"] <= ack["acked_at"]
        n_at_ack = len(a.calls)
        bars_at_ack = a.rt.processed
        await wait_for(lambda: a.rt.processed >= bars_at_ack + 150)
        assert a.rt.processed >= bars_at_ack + 150
        # after the ack only risk-reducing orders (end-of-day flatten, exits) may go (review D10)
        after = [(q, pos) for t, q, pos in a.calls if t >= ack["acked_at"]]
        assert all(q * pos < 0 and abs(q) <= abs(pos) for q, pos in after), "no risk-adding order after the ack"
        assert len(a.calls) == n_at_ack + len(after)
        assert a.metric("quantramp_kill_latch") == 1
        assert a.metric("quantramp_kill_ack_seconds") == pytest.approx(ack["latency_s"])
        assert a.http.ready  # killed is still ready: it serves its evidence
        position = a.engine.live.position
        stop.set()
        await task
        await a.close()

        # restarted while killed: stays killed, only reduces its position, never adds risk
        b = make_pod(redis_server.url, QR_BAR_INTERVAL_SECONDS=INTERVAL)
        stop = asyncio.Event()
        task = asyncio.create_task(b.rt.run(stop))
        assert await wait_for(lambda: b.rt.processed >= 200)
        assert b.rt.latch.engaged and b.metric("quantramp_kill_latch") == 1
        assert abs(b.engine.live.position) <= abs(position) and b.engine.live.position * position >= 0
        assert all(q * pos < 0 and abs(q) <= abs(pos) for _, q, pos in b.calls)

        # unkill: cleared, acknowledged, trading again
        await ks.release(op, b.keys, id="u-1")
        ack = await ks.wait_ack(op, b.keys, "challenger", "u-1")
        assert ack["action"] == "unkill"
        assert await op.get(b.keys.kill) is None
        assert await wait_for(lambda: len(b.calls) > 0)
        assert not b.rt.latch.engaged and b.metric("quantramp_kill_latch") == 0
        stop.set()
        await task
        await b.close()
        await op.aclose()

    asyncio.run(scenario())


def test_kill_with_flatten_sends_only_flattening_orders(redis_server, make_pod):
    async def scenario():
        op = Redis.from_url(redis_server.url, decode_responses=True)
        a = make_pod(redis_server.url, QR_BAR_INTERVAL_SECONDS=INTERVAL)
        stop = asyncio.Event()
        task = asyncio.create_task(a.rt.run(stop))
        assert await wait_for(lambda: a.engine.live.position != 0 and len(a.calls) >= 2)
        await ks.engage(op, a.keys, reason="critical alert", flatten=True, id="k-2")
        ack = await ks.wait_ack(op, a.keys, "challenger", "k-2")
        assert ack["flatten"] is True
        assert await wait_for(lambda: a.engine.live.position == 0 and a.engine.working_qty == 0)
        after = [(qty, pos) for t, qty, pos in a.calls if t >= ack["acked_at"]]
        assert all(pos != 0 and abs(pos + qty) < abs(pos) for qty, pos in after), after
        n = len(a.calls)
        bars = a.rt.processed
        await wait_for(lambda: a.rt.processed >= bars + 100)
        assert len(a.calls) == n and a.engine.live.position == 0
        stop.set()
        await task
        await a.close()
        await op.aclose()

    asyncio.run(scenario())


def test_both_roles_ack_and_a_kill_published_while_down_is_caught_up(redis_server, make_pod):
    async def scenario():
        op = Redis.from_url(redis_server.url, decode_responses=True)
        champ = make_pod(redis_server.url, QR_ROLE="champion", QR_BAR_INTERVAL_SECONDS=INTERVAL)
        chall = make_pod(redis_server.url, QR_BAR_INTERVAL_SECONDS=INTERVAL)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(p.rt.run(stop)) for p in (champ, chall)]
        assert await wait_for(lambda: champ.rt.processed > 50 and chall.rt.processed > 50)
        await ks.engage(op, chall.keys, reason="both", id="k-3")
        for role in ("champion", "challenger"):
            ack = await ks.wait_ack(op, chall.keys, role, "k-3")
            assert ack["role"] == role
        assert champ.rt.latch.engaged and chall.rt.latch.engaged
        await ks.release(op, chall.keys, id="u-3")
        await ks.wait_ack(op, chall.keys, "champion", "u-3")
        await ks.wait_ack(op, chall.keys, "challenger", "u-3")
        stop.set()
        await asyncio.gather(*tasks)

        # only the latch key (no message seen by anybody): a pod's per-bar write catches it up
        c = make_pod(redis_server.url, QR_BAR_INTERVAL_SECONDS=INTERVAL)
        stop = asyncio.Event()
        task = asyncio.create_task(c.rt.run(stop))
        assert await wait_for(lambda: c.rt.processed > 20)
        await op.set(c.keys.kill, ks.KillCommand("kill", reason="latch only", id="k-4").to_json())
        assert await wait_for(lambda: c.rt.latch.engaged, timeout=5)
        ack = await ks.wait_ack(op, c.keys, "challenger", "k-4")
        assert ack["reason"] == "latch only"
        stop.set()
        await task
        for p in (champ, chall, c):
            await p.close()
        await op.aclose()

    asyncio.run(scenario())
