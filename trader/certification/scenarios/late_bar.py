"""stale_price: after 40 bars, bars from 3 minutes earlier arrive again (a feed replaying late
data) while the model wants to enter: no decision may be taken on a price older than the
seed's 90 s (the model flips every bar, so every accepted bar brings an order). Two layers guard it (the bar check's time order and the governor's price age);
the control is both."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "stale_price"
DESCRIPTION = "late bars (3 minutes old) with entries wanted"


def run_scenario() -> Outcome:
    bars = session("2026-07-29", wiggle(60))
    late = bars[:40] + [bars[36], bars[37]] + bars[40:]
    eng = pod_engine(Script(lambda i: 0.9 if i % 2 == 0 else 0.1))
    aud = Auditor(AuditLimits.seed_runbook())
    steps = run(eng, late, aud)
    return Outcome(aud.count(), {"refused": [s.bar_refused for s in steps if s.bar_refused]})
