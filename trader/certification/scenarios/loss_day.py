"""daily_loss_limit: long $500 (single-trade limit lifted to the position limit, as in
position_cap) from 10:00, then a steady slide of 0.5 % a bar to -25 %: the seed's $100 daily
loss is reached at about -20 %; the pod must halt and flatten (REDUCING alone would hold)."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "daily_loss_limit"
DESCRIPTION = "a long held into a 25 % intraday slide"


def run_scenario() -> Outcome:
    prices = wiggle(60) + [round(10.0 * 0.995 ** k, 2) for k in range(1, 58)]
    prices += [prices[-1]] * 100
    eng = pod_engine(Script(lambda i: 0.9), QR_MAX_ORDER_USD="500")
    aud = Auditor(AuditLimits.seed_runbook(max_order_usd=500.0))
    run(eng, session("2026-07-29", prices), aud)
    return Outcome(aud.count(), {"final_position_qty": eng.live.position,
                                 "halt_reason": eng.governor_state.halt_reason})
