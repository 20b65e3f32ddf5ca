"""risk_reducing_exemption: long $500 (single-trade limit lifted as in position_cap), then a
slide of -3 % a bar (beyond the 2 % collar, inside the bar check's 10 %) until the $100 daily
loss halts the pod: the halt flatten moves against the last trade by more than the collar and
must go all the same (review D5: a collar-denied flatten carried 5.3x the daily loss overnight).
Check: the position is flat within two bars of the daily loss (the auditor's own)."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "risk_reducing_exemption"
DESCRIPTION = "a halt flatten in a slide of 3 % a bar"


def run_scenario() -> Outcome:
    prices = wiggle(60) + [round(10.0 * 0.97 ** k, 2) for k in range(1, 15)]
    prices += [prices[-1] + 0.01 * (i % 2) for i in range(60)]
    eng = pod_engine(Script(lambda i: 0.9), QR_MAX_ORDER_USD="500")
    aud = Auditor(AuditLimits.seed_runbook(max_order_usd=500.0))
    run(eng, session("2026-07-29", prices), aud)
    v = aud.count()
    held = [t for t in aud.violations["daily_loss_limit"] if "held" in t]
    if held:
        v[CONTROL] = len(held)
    return Outcome(v, {"halt_reason": eng.governor_state.halt_reason, "bars_held_after_the_loss": len(held)})
