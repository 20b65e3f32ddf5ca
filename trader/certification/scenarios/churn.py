"""max_daily_turnover: the model flips every bar on a quiet tape (a churning model); with $50
orders the seed's $2,000 daily turnover is reached after about 40 round trips."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "max_daily_turnover"
DESCRIPTION = "a model that flips every minute for a whole session"


def run_scenario() -> Outcome:
    eng = pod_engine(Script(lambda i: 0.9 if i % 2 == 0 else 0.1))
    aud = Auditor(AuditLimits.seed_runbook())
    steps = run(eng, session("2026-07-29", wiggle(380)), aud)
    return Outcome(aud.count(), {"orders": sum(1 for s in steps if s.order_qty),
                                 "turnover_denials": eng.governor.denials.get("max_daily_turnover", 0)})
