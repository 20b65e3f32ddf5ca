"""kill_allows_reducing: the pod's runtime is killed without flatten at 15:00 New York while
long; the kill must withhold new risk but never the end-of-day flatten (FIA: risk-reducing
orders pass a kill; review D10: the position was carried overnight). The auditor checks the
close; the scenario also counts risk-adding orders sent after the kill."""

import asyncio
from datetime import timedelta

from ... import killswitch as ks
from ..pod import AuditLimits, Auditor, Outcome, Script, pod_runtime, session, wiggle

CONTROL = "kill_allows_reducing"
DESCRIPTION = "a kill without flatten at 15:00 while long, bars to the close"


def run_scenario() -> Outcome:
    rt = pod_runtime(Script(lambda i: 0.9))
    aud = Auditor(AuditLimits.seed_runbook())
    bars = session("2026-07-29", wiggle(120), start="14:00")
    added = 0

    async def go() -> None:
        nonlocal added
        for i, b in enumerate(bars):
            if i == 60:
                await rt.on_kill(ks.KillCommand(ks.KILL, reason="certify", flatten=False), 0.0)
            pos = rt.engine.live.position
            r = await rt.on_bar(b, 0.0)
            f = r.fill
            if i > 60 and f is not None and f.filled_qty and abs(pos + f.filled_qty) > abs(pos):
                added += 1
            aud.bar(b.ts, b.close, f.filled_qty if f else 0, f.price if f else 0.0, f.commission_usd if f else 0.0,
                    rt.engine.working_qty)

    asyncio.run(go())
    v = aud.count()
    if v.get("end_of_day_flatten"):
        v[CONTROL] = v["end_of_day_flatten"]
    if added:
        v[CONTROL] = v.get(CONTROL, 0) + added
    return Outcome(v, {"position_at_close_qty": rt.engine.live.position, "risk_adding_fills_after_kill": added})
