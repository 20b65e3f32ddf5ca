"""Resume against a real redis-server (issue 12, D1): a halted pod resumes only by an explicit,
recorded message on the kill channel (what the operator's ``clear`` will publish)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from redis.asyncio import Redis

from quantramp.trader import killswitch as ks
from quantramp.trader.governor import HALTED

pytestmark = pytest.mark.integration


def test_resume_message_lifts_a_halt_and_is_recorded_in_redis(redis_server, make_pod):
    async def scenario():
        op = Redis.from_url(redis_server.url, decode_responses=True)
        a = make_pod(redis_server.url, QR_BAR_INTERVAL_SECONDS="0.005")
        stop = asyncio.Event()
        task = asyncio.create_task(a.rt.run(stop))
        deadline = time.monotonic() + 10
        while a.rt.processed < 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        a.engine.governor.halt("manual_halt")  # e.g. a drawdown halt; only a resume lifts it
        await asyncio.sleep(0.05)
        assert a.engine.governor_state.trading_state == HALTED
        with pytest.raises(ValueError):
            await ks.resume_trading(op, a.keys, by="  ", reason="nobody")
        other = await ks.resume_trading(op, a.keys, by="oncall", reason="for the champion", role="champion", id="r-0")
        await asyncio.sleep(0.2)
        assert a.engine.governor_state.trading_state == HALTED  # addressed to the other role
        assert other.id == "r-0"
        cmd = await ks.resume_trading(op, a.keys, by="oncall@desk", reason="loss reviewed", role="challenger", id="r-1")
        ack = await ks.wait_ack(op, a.keys, "challenger", "r-1")
        assert ack["action"] == "resume" and ack["reason"] == "loss reviewed" and cmd.by == "oncall@desk"
        assert a.engine.governor_state.trading_state != HALTED
        day = await op.get(a.keys.current)
        book = json.loads(await op.hget(a.keys.book(day), "engine"))
        rec = book["state"]["governor_state"]["resumes"][-1]
        assert rec["by"] == "oncall@desk" and rec["halt_reason"] == "manual_halt" and rec["trading_state"] == HALTED
        assert not a.rt.latch.engaged  # a resume never touches the kill latch
        stop.set()
        await task
        await a.close()
        await op.aclose()

    asyncio.run(scenario())
