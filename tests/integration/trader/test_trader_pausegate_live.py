"""Pause gate on the paced replay (real clock, real Redis): opens only after the feed was timely for the window."""

from __future__ import annotations

import asyncio
import time

import pytest

pytestmark = pytest.mark.integration


class SlowOnce:
    """Momentum model that stalls once, ``stall_s`` seconds, on call ``at`` (a late feed for the next bars)."""

    def __init__(self, at: int, stall_s: float) -> None:
        self.at, self.stall_s, self.calls = at, stall_s, 0
        self.stalled_at: float | None = None

    def p_up_one(self, x):
        self.calls += 1
        if self.calls == self.at:
            time.sleep(self.stall_s)
            self.stalled_at = time.monotonic()
        return 0.9 if x[0] > 0 else 0.1


@pytest.mark.parametrize("stall", [False, True])
def test_pause_gate_opens_only_after_the_window(redis_server, make_pod, stall):
    window = 1.0

    async def scenario():
        pod = make_pod(
            redis_server.url, QR_BAR_INTERVAL_SECONDS="0.01", QR_START_PAUSED="true",
            QR_PAUSE_WINDOW_SECONDS=str(window), QR_PAUSE_MAX_LATENCY_MS="100",
        )
        model = SlowOnce(at=20, stall_s=0.3 if stall else 0.0)  # bar ~50 (after the 30-bar warm-up)
        pod.engine.model = model
        pod.paused_calls = []
        submit = pod.engine.broker.submit

        def guarded(order):
            if pod.rt.gate.paused:
                pod.paused_calls.append(order.qty)
            return submit(order)

        pod.engine.broker.submit = guarded
        stop = asyncio.Event()
        t0 = time.monotonic()
        task = asyncio.create_task(pod.rt.run(stop))
        await asyncio.sleep(0.3)
        assert pod.rt.gate.paused and pod.metric("quantramp_paused") == 1
        deadline = time.monotonic() + 30  # a loaded machine makes late bars, each restarting the window
        while pod.rt.gate.paused and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not pod.rt.gate.paused
        opened = pod.rt.gate.opened_at
        n_paused = pod.rt.processed
        await asyncio.sleep(1.0)
        stop.set()
        await task
        await pod.close()
        return pod, model, t0, opened, n_paused

    pod, model, t0, opened, n_paused = asyncio.run(scenario())
    assert opened - t0 >= window
    gate = pod.rt.gate
    if gate.last_late_at is not None:  # a late bar restarts the window (the first bars may be late:
        assert opened - gate.last_late_at >= window  # the market calendar loads on the first bar)
    if stall:
        assert gate.late_bars >= 1 and gate.last_late_at >= model.stalled_at
        assert opened - model.stalled_at >= window
    # nothing reached the broker while paused, and it trades once open
    assert pod.paused_calls == []
    assert len(pod.calls) > 0
    assert pod.metric("quantramp_paused") == 0
    assert n_paused > 50
