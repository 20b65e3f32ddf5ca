"""Stress scenario ``redis_outage`` (see :mod:`quantramp.trader.stress`).
"""

from __future__ import annotations

import asyncio
import math
import time

from ..base import Context, ScenarioResult, THRESHOLDS
from ..local_redis import LocalRedis
from ..pods import Pod, _flattening, _wait


# -- scenario: Redis outage -----------------------------------------------------------------------------
async def _redis_outage(ctx: Context, res: ScenarioResult, srv: LocalRedis) -> None:
    pod = Pod(ctx, srv.url, "outage", interval_s=0.002)
    rt = pod.rt
    lost_at: list[float] = []
    orig_lost = rt._redis_lost

    def lost(exc: BaseException) -> None:
        lost_at.append(time.time())
        orig_lost(exc)

    rt._redis_lost = lost  # type: ignore[method-assign]
    # when the runtime itself allowed orders again (the test's polling below notices later)
    up_at: list[float] = []
    orig_set_up = rt.rmetrics.set_redis_up

    def set_up(value: bool) -> None:
        if value:
            up_at.append(time.time())
        orig_set_up(value)

    rt.rmetrics.set_redis_up = set_up  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop, max_bars=100_000))
    ready_samples: list[bool] = []
    try:
        await _wait(lambda: rt.processed >= 300 and pod.http.ready, 30)
        ready_before = pod.http.ready
        t_kill = time.time()
        srv.kill()
        detected = await _wait(lambda: not rt.redis_up, THRESHOLDS["redis_outage_detect_s"] + 3)
        t_detect = time.time()
        bars_down0 = rt.processed
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            ready_samples.append(pod.http.ready)
            await asyncio.sleep(0.01)
        bars_during = rt.processed - bars_down0
        t_restart = time.time()
        srv.start()
        recovered = await _wait(lambda: rt.redis_up and pod.http.ready, THRESHOLDS["redis_recovery_s"] + 5)
        t_recovered = time.time()
        n_rec = rt.processed
        await _wait(lambda: rt.processed >= n_rec + 150, 30)
        # settled: Redis up, ready, and a book written since (stale pooled connections may blip once)
        settled = await _wait(lambda: rt.redis_up and pod.http.ready, 5)
        n_set = rt.processed
        await _wait(lambda: rt.processed >= n_set + 5, 10)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        saved = await pod.store.load()
    finally:
        await pod.shutdown(stop, task)
    t_lost = lost_at[0] if lost_at else math.inf
    blips = sum(1 for t in lost_at if t >= t_restart)
    t_back = next((t for t in up_at if t >= t_restart), t_recovered)
    during = [(q, p) for t, q, p in pod.calls if t_lost <= t < t_back]
    risky = [(q, p) for q, p in during if not _flattening(q, p)]
    after = [c for c in pod.calls if c[0] >= t_back]
    saved_pos = None if saved is None else saved[1]["live"]["position"]
    res.measurements.update(
        ready_before_outage=ready_before,
        detect_s=t_detect - t_kill if detected else None,
        bars_during_outage=bars_during,
        ready_during_outage_samples=len(ready_samples),
        ready_true_during_outage=sum(ready_samples),
        broker_calls_during_outage=len(during),
        risk_adding_orders_during_outage=len(risky),
        recovery_s=t_recovered - t_restart if recovered else None,
        broker_calls_after_recovery=len(after),
        redis_errors_after_restart=blips,
        settled_ready_after_restart=settled,
        bars=rt.processed,
        engine_position_qty=pod.engine.live.position,
        redis_position_qty=saved_pos,
    )
    res.check("ready_before_outage", ready_before, "==", True)
    res.check("detect_s", t_detect - t_kill if detected else None, "<", THRESHOLDS["redis_outage_detect_s"])
    res.check("bars_during_outage", bars_during, ">=", 50)
    res.check("ready_true_during_outage", sum(ready_samples), "==", 0)
    res.check("risk_adding_orders_during_outage", len(risky), "==", 0)
    res.check("recovery_s", t_recovered - t_restart if recovered else None, "<", THRESHOLDS["redis_recovery_s"])
    res.check("settled_ready_after_restart", settled, "==", True)
    res.check("redis_position_equals_engine", saved_pos == pod.engine.live.position, "==", True)

def scenario_redis_outage(ctx: Context, res: ScenarioResult) -> None:
    assert ctx.tmpdir is not None
    srv = LocalRedis(ctx.tmpdir / "redis-outage")
    srv.start()
    try:
        asyncio.run(_redis_outage(ctx, res, srv))
    finally:
        srv.stop()
