"""drawdown_ladder: long $500 (single-trade limit lifted as in position_cap), then a crash of
-45 % that persists (the bar check takes it one bar late): the loss passes the $200 drawdown
halt. Next day the model wants to go long all day: the drawdown halt (and the REDUCING latch
under it) must keep every entry out."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "drawdown_ladder"
DESCRIPTION = "a persistent -45 % crash, then a day of wanted entries"


def run_scenario() -> Outcome:
    day1 = wiggle(60) + [5.5, 5.51] + [5.5 + 0.01 * (i % 2) for i in range(60)]
    day2 = [5.5 + 0.01 * (i % 2) for i in range(120)]
    eng = pod_engine(Script(lambda i: 0.9), QR_MAX_ORDER_USD="500")
    aud = Auditor(AuditLimits.seed_runbook(max_order_usd=500.0))
    run(eng, session("2026-07-29", day1) + session("2026-07-30", day2), aud)
    return Outcome(aud.count(), {"halt_reason": eng.governor_state.halt_reason,
                                 "final_position_qty": eng.live.position})
