"""Stress scenario ``earnings_gap`` (see :mod:`quantramp.trader.stress`).
"""

from __future__ import annotations

from ..base import Context, GAP_DAY, ScenarioResult, _breaches, _ny, bar_list


# -- scenario: the real earnings gap -------------------------------------------------------------------
def scenario_earnings_gap(ctx: Context, res: ScenarioResult) -> None:
    run = ctx.baseline()
    bars = ctx.bar_list
    days = [_ny(b.ts).date().isoformat() for b in bars]
    last_of_day = [i for i in range(len(bars)) if i + 1 == len(bars) or days[i + 1] != days[i]]
    overnight = [(days[i], run.positions[i]) for i in last_of_day]
    not_flat = [d for d, p in overnight if p != 0]
    gi = days.index(GAP_DAY)
    prev_close = bars[gi - 1].close
    gap = bars[gi].open / prev_close - 1
    pos_before = run.positions[gi - 1]
    pending_before = run.steps[gi - 1].order_qty
    closing = sum(1 for s in run.steps if s.order_qty and s.closing)
    gap_steps = [s for s, d in zip(run.steps, days) if d == GAP_DAY]
    collar_gap_day = sum(1 for s in gap_steps if s.verdict and any(r.value == "price_collar" for r in s.verdict.reasons))
    res.measurements.update(
        gap_day=GAP_DAY,
        gap_open_vs_prev_close_ratio=gap,
        position_at_prev_close_qty=pos_before,
        order_pending_over_night_qty=pending_before,
        gap_pnl_impact_usd=pos_before * (bars[gi].open - prev_close),
        sessions=len(overnight),
        sessions_not_flat_at_close=not_flat,
        closing_orders=closing,
        collar_denials_on_gap_day=collar_gap_day,
        pnl_usd=run.engine.live.pnl(),
        max_drawdown_ratio=run.engine.max_drawdown,
        audit_violations=run.auditor.violations[:10],
    )
    res.check("gap_ratio_is_real_move", abs(gap), ">=", 0.05)
    res.check("position_at_prev_close_qty", abs(pos_before) + abs(pending_before), "==", 0)
    res.check("sessions_not_flat_at_close", len(not_flat), "==", 0)
    res.check("hard_limit_breaches", _breaches(run), "==", 0)
