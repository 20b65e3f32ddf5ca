"""Stress scenario ``hard_kill`` (see :mod:`quantramp.trader.stress`).
"""

from __future__ import annotations

import asyncio
import math
import time

from ... import killswitch as ks
from ..base import Context, ScenarioResult, THRESHOLDS
from ..pods import Pod, _flattening, _wait


# -- scenario: hard kill -------------------------------------------------------------------------------
async def _hard_kill(ctx: Context, res: ScenarioResult) -> None:
    pod = Pod(ctx, ctx.redis_url, "hardkill", interval_s=0.002)
    stop = asyncio.Event()
    total = 900
    task = asyncio.create_task(pod.rt.run(stop, max_bars=total))
    try:
        # kill while holding a position if one comes, else after 400 bars
        await _wait(lambda: pod.rt.processed >= 400 or (pod.rt.processed >= 120 and pod.engine.live.position != 0), 30)
        pos_at_kill = pod.engine.live.position
        calls_before = len(pod.calls)
        cmd = await ks.engage(pod.store.client, pod.keys, reason="stress certification hard kill", flatten=True)
        got = await _wait(lambda: pod.rt.latch.engaged, 5)
        ack = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ack = await ks.read_ack(pod.store.client, pod.keys, pod.settings.role)
            if ack is not None and ack.get("id") == cmd.id:
                break
            await asyncio.sleep(0.005)
        processed_at_ack = pod.rt.processed
        await asyncio.wait_for(task, timeout=60)
        latch = await pod.store.read_kill()
    finally:
        await pod.shutdown(stop, task)
    acked_at = ack["acked_at"] if ack else math.inf
    after = [(t, q, p) for t, q, p in pod.calls if t >= acked_at]
    risky = [(q, p) for _, q, p in after if not _flattening(q, p)]
    res.measurements.update(
        bars=pod.rt.processed,
        bars_after_ack=pod.rt.processed - processed_at_ack,
        position_at_kill_qty=pos_at_kill,
        broker_calls_before_kill=calls_before,
        broker_calls_after_ack=len(after),
        risk_adding_orders_after_ack=len(risky),
        final_position_qty=pod.engine.live.position,
        latch_engaged_in_memory=got,
        latch_persisted=latch is not None,
        ack_latency_s=None if ack is None else ack.get("latency_s"),
        blocked_orders=pod.metrics.registry.get_sample_value(
            "quantramp_orders_blocked_total",
            {"strategy": pod.settings.strategy, "role": pod.settings.role, "stage": pod.settings.stage, "reason": "kill"},
        ),
    )
    res.check("acknowledged", ack is not None, "==", True)
    res.check("ack_latency_s", None if ack is None else ack.get("latency_s"), "<", THRESHOLDS["kill_ack_latency_s"])
    res.check("bars_after_ack", pod.rt.processed - processed_at_ack, ">=", 100)
    res.check("risk_adding_orders_after_ack", len(risky), "==", 0)
    res.check("final_position_qty", abs(pod.engine.live.position), "==", 0)
    res.check("latch_persisted", latch is not None, "==", True)

def scenario_hard_kill(ctx: Context, res: ScenarioResult) -> None:
    asyncio.run(_hard_kill(ctx, res))
