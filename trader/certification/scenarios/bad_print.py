"""bar_validation: one 10x print while long $500 (as in position_cap). The oracle is the same
run without the print: the positions after it must be the same bar for bar (no halt, no
forced flatten). The auditor skips the injected bar (it knows which one it is)."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "bar_validation"
DESCRIPTION = "a single 10x print while long"


def run_scenario() -> Outcome:
    clean = session("2026-07-29", wiggle(120))
    bad = list(clean)
    b = bad[70]
    bad[70] = type(b)(b.ts, b.open * 10, b.high * 10, b.low * 10, b.close * 10, b.volume)
    paths, ends, aud = [], [], None
    for bars in (clean, bad):
        eng = pod_engine(Script(lambda i: 0.9), QR_MAX_ORDER_USD="500")
        aud = Auditor(AuditLimits.seed_runbook(max_order_usd=500.0))
        steps = run(eng, bars, aud, skip_audit=lambda i, bars=bars: bars is bad and i == 70)
        paths.append([s.target for i, s in enumerate(steps) if i != 70])
        ends.append((eng.live.position, eng.governor_state.trading_state, eng.governor_state.halt_reason))
    v = aud.count()
    differ = sum(1 for a, b in zip(*paths) if a != b)
    if differ or ends[0] != ends[1]:
        v["bar_validation"] = max(1, differ)
    return Outcome(v, {"clean_end": ends[0], "with_print_end": ends[1], "bars_that_differ": differ})
