"""A retired trader flattens before it exits (issue 9: "a rolled-back trader must not leave positions
open: today SIGTERM only stops"), against a real redis-server. The operator names the book scope it
runs for each role (``...:{role}:scope``); a pod stopped while its scope is no longer that one is
retired; a pod stopped for a restart of its own scope keeps its position."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from redis.asyncio import Redis

pytestmark = pytest.mark.integration


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def _run_until_position_then_stop(pod, live_scope: str | None, redis_url: str):
    async def scenario():
        op = Redis.from_url(redis_url, decode_responses=True)
        if live_scope is not None:
            await op.set(pod.store.keys.live_scope, live_scope)
        stop = asyncio.Event()
        task = asyncio.create_task(pod.rt.run(stop))
        await _until(lambda: pod.engine.live.position != 0 and pod.engine.working_qty == 0, timeout=20)
        held = pod.engine.live.position
        calls_before = len(pod.calls)
        stop.set()
        await task
        rec = await op.get(pod.store.keys.retired)
        await op.aclose()
        return held, calls_before, rec

    return asyncio.run(scenario())


def test_a_retired_challenger_flattens_before_it_exits(redis_server, make_pod):
    pod = make_pod(redis_server.url, QR_BOOK_SCOPE="r1-canary-1", QR_BAR_INTERVAL_SECONDS="0.002")
    # the operator rolled back: it runs no challenger any more ("" = none)
    held, calls_before, rec = _run_until_position_then_stop(pod, "", redis_server.url)
    assert held != 0
    assert pod.engine.live.position == 0, "a retired pod must not leave its position open"
    closing = pod.calls[calls_before:]
    assert closing and closing[-1][1] == -held, closing  # one order, the whole position, the opposite side
    body = json.loads(rec)
    assert body["flat"] is True and body["position_qty"] == 0 and body["scope"] == "r1-canary-1"


def test_a_pod_stopped_for_a_restart_of_its_own_scope_keeps_its_position(redis_server, make_pod):
    pod = make_pod(redis_server.url, QR_BOOK_SCOPE="r1-canary-1", QR_BAR_INTERVAL_SECONDS="0.002")
    held, calls_before, rec = _run_until_position_then_stop(pod, "r1-canary-1", redis_server.url)
    assert pod.engine.live.position == held and len(pod.calls) == calls_before and rec is None


def test_no_scope_record_means_no_retirement(redis_server, make_pod):
    """An operator that never wrote a scope (older operator, dev run): stopping is a plain stop."""
    pod = make_pod(redis_server.url, QR_BOOK_SCOPE="r1-canary-1", QR_BAR_INTERVAL_SECONDS="0.002")
    held, calls_before, rec = _run_until_position_then_stop(pod, None, redis_server.url)
    assert pod.engine.live.position == held and rec is None
