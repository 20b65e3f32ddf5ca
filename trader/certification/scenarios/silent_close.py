"""wall_clock_flatten: a paced pod (one-minute bars, live pacing) whose feed goes silent at
15:50 New York while long: the end-of-day flatten must happen on the wall clock (review D8: the
position was held overnight). The scenario moves the runtime's clock and calls its tick as the
watchdog task does."""

import asyncio

from ..pod import FakeClock, Outcome, Script, pod_runtime, session, wiggle

CONTROL = "wall_clock_flatten"
DESCRIPTION = "feed silent from 15:50 while long"


def run_scenario() -> Outcome:
    clock = FakeClock()
    rt = pod_runtime(Script(lambda i: 0.9), clock=clock, QR_BAR_INTERVAL_SECONDS="60")
    bars = session("2026-07-29", wiggle(50), start="15:00")  # 15:00 .. 15:49

    async def go() -> int:
        for b in bars:
            await rt.on_bar(b, 0.0)
            clock.t += 60.0
        held = rt.engine.live.position
        for _ in range(16):  # 15:50 .. 16:05 on the wall clock, no bar
            clock.t += 60.0
            await rt.tick()
        return held

    held = asyncio.run(go())
    v = {CONTROL: 1} if rt.engine.live.position != 0 else {}
    return Outcome(v, {"position_at_silence_qty": held, "position_after_close_qty": rt.engine.live.position})
