"""max_position: the seed's single-trade limit ($50) is 10 % of its position limit ($500), so
from flat it always binds first and the engine never adds to a position; this scenario lifts
the single-trade limit to the pod's capital (QR_MAX_ORDER_USD=1000, the auditor likewise) so
one entry can reach the position cap: on a still tape (ranges of 0.4 cents) the ATR budget
asks for the whole capital ($1,000)."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session

CONTROL = "max_position"
DESCRIPTION = "always-long entry whose ATR size (~$1,000) exceeds the $500 position limit"


def run_scenario() -> Outcome:
    eng = pod_engine(Script(lambda i: 0.9), QR_MAX_ORDER_USD="1000")
    aud = Auditor(AuditLimits.seed_runbook(max_order_usd=1000.0))
    run(eng, session("2026-07-29", [10.0] * 120, spread=0.004), aud)  # ATR ~0.004: ~250 shares wanted
    return Outcome(aud.count(), {"position_qty": eng.live.position})
