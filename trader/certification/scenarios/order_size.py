"""max_order: a long entry from flat on a $10 stock; the ATR size is far above $50, so the
single-trade limit must cut every risk-adding order to 5 shares."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "max_order"
DESCRIPTION = "always-long entries on a quiet $10 tape at the seed's $50 single-trade limit"


def run_scenario() -> Outcome:
    eng = pod_engine(Script(lambda i: 0.9))
    aud = Auditor(AuditLimits.seed_runbook())
    steps = run(eng, session("2026-07-29", wiggle(120)), aud)
    sizes = [abs(s.order_qty) for s in steps if s.order_qty]
    return Outcome(aud.count(), {"orders": len(sizes), "largest_order_qty": max(sizes, default=0)})
