"""end_of_day_flatten: always long from 15:00 New York to the 16:00 close."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "end_of_day_flatten"
DESCRIPTION = "a long held into the close"


def run_scenario() -> Outcome:
    eng = pod_engine(Script(lambda i: 0.9))
    aud = Auditor(AuditLimits.seed_runbook())
    run(eng, session("2026-07-29", wiggle(60), start="15:00"), aud)
    return Outcome(aud.count(), {"position_at_close_qty": eng.live.position})
