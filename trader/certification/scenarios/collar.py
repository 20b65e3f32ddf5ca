"""price_collar: a tape that moves 3 % every bar (inside the bar check's 10 % bound) and a
model that wants to enter on every bar: every entry is 3 % from the last trade, outside the
seed's 2 % collar."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session

CONTROL = "price_collar"
DESCRIPTION = "entries wanted on a tape jumping 3 % a bar"


def run_scenario() -> Outcome:
    prices = [10.0 if i % 2 == 0 else 10.3 for i in range(120)]
    eng = pod_engine(Script(lambda i: 0.9))
    aud = Auditor(AuditLimits.seed_runbook())
    run(eng, session("2026-07-29", prices), aud)
    return Outcome(aud.count(), {"collar_denials": eng.governor.denials.get("price_collar", 0)})
