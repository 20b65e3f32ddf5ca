"""max_position on daily bars: as :mod:`.position_cap` (the single-trade limit lifted to the capital,
so one entry can reach the $500 position cap), one bar per New York session over three months (the
features warm up on the first 30). The
position is held across nights and weekends (no end-of-day rule on daily bars) and must stay
within the cap on every session; the auditor times decisions at each session's close."""

from ..pod import AuditLimits, Auditor, Outcome, Script, daily_sessions, pod_engine, run

CONTROL = "max_position"
DESCRIPTION = "always-long daily entry whose ATR size exceeds the $500 position limit"
DAILY_ENV = {"QR_BAR_SECONDS": "86400", "QR_BARS_SOURCE": "file", "QR_BARS_URL": "/bars/{symbol}.csv",
             "QR_MAX_ORDER_USD": "1000"}


def run_scenario() -> Outcome:
    eng = pod_engine(Script(lambda i: 0.9), **DAILY_ENV)
    aud = Auditor(AuditLimits.seed_runbook(max_order_usd=1000.0), bar_seconds=86_400)
    steps = run(eng, daily_sessions("2026-07-01", [10.0 + 0.01 * (i % 2) for i in range(60)], spread=0.004), aud)
    held = sum(1 for s in steps if s.fill is None and eng.live.position)  # sessions the position was carried
    return Outcome(aud.count(), {"position_qty": eng.live.position, "sessions_held": held})
