"""order_throttle: 5-second bars (QR_BAR_SECONDS=5) and a model that flips every bar: 12
orders a minute are wanted, the seed's throttle allows 10 per rolling 60 s."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "order_throttle"
DESCRIPTION = "a flip every 5-second bar for 10 minutes"


def run_scenario() -> Outcome:
    eng = pod_engine(Script(lambda i: 0.9 if i % 2 == 0 else 0.1), QR_BAR_SECONDS="5")
    aud = Auditor(AuditLimits.seed_runbook(), bar_seconds=5)
    run(eng, session("2026-07-29", wiggle(160), start="10:00", bar_seconds=5), aud)
    return Outcome(aud.count(), {"throttle_denials": eng.governor.denials.get("order_throttle", 0)})
