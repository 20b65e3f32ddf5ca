"""Stress scenario ``flash_crash`` (see :mod:`quantramp.trader.stress`).
"""

from __future__ import annotations

from ...marketdata import Bar
from ..base import CAPITAL_USD, CRASH_BARS, CRASH_DEPTH, Context, ScenarioResult, THRESHOLDS, _breaches, _ny, bar_list, new_engine, run_engine


# -- scenario: flash crash ------------------------------------------------------------------------
def crash_bars(bars: list[Bar], start: int, depth: float = CRASH_DEPTH, n: int = CRASH_BARS) -> list[Bar]:
    """``bars`` with a ``-depth`` move over ``n`` bars from ``start``; the rest of that day stays down."""
    out = list(bars)
    day = _ny(bars[start].ts).date()
    for i in range(start, len(bars)):
        if _ny(bars[i].ts).date() != day:
            break
        k = i - start
        f_close = 1.0 - depth * min(k + 1, n) / n
        f_open = 1.0 - depth * min(k, n) / n
        b = bars[i]
        o, c = round(b.open * f_open, 2), round(b.close * f_close, 2)
        hi = max(round(b.high * f_open, 2), o, c) if k < n else round(b.high * f_close, 2)
        lo = min(round(b.low * f_close, 2), o, c)
        if k >= n:
            o = round(b.open * f_close, 2)
            hi, lo = max(hi, o, c), min(lo, o, c)
        out[i] = Bar(b.ts, o, hi, lo, c, b.volume)
    return out

def scenario_flash_crash(ctx: Context, res: ScenarioResult) -> None:
    base = ctx.baseline()
    bars = ctx.bar_list
    start = None
    for i, bar in enumerate(bars):
        t = _ny(bar.ts)
        if i < 390 or not (10 <= t.hour < 14):
            continue
        if base.positions[i - 1] != 0:
            start = i
            break
    if start is None:
        raise RuntimeError("no bar with an open position to crash into")
    crashed = crash_bars(bars, start)
    eng = new_engine(ctx.model, ctx.bars, ctx.seed)
    run = run_engine(eng, crashed)
    day = _ny(bars[start].ts).date()
    end = start
    while end + 1 < len(bars) and _ny(bars[end + 1].ts).date() == day:
        end += 1
    window = range(start, min(start + CRASH_BARS + 5, end + 1))
    collar = halted = reducing = requested = risk_added = 0
    for i in window:
        s = run.steps[i]
        v = s.verdict
        if v is not None:
            requested += 1
            names = {r.value for r in v.reasons}
            collar += "price_collar" in names
            halted += "trading_halted" in names
            reducing += "trading_reducing" in names
        if i < start + CRASH_BARS and s.order_qty:
            pos = run.positions[i]
            new = pos + s.order_qty
            risk_added += abs(new) > abs(pos) or new * pos < 0
    pos0 = run.positions[start - 1]
    eq0 = run.equity[start - 1]
    loss = eq0 - min(run.equity[start : end + 1])
    lim = eng.limits
    bound = lim.max_position_usd * CRASH_DEPTH + THRESHOLDS["crash_loss_slack_ratio"] * CAPITAL_USD
    moves = [crashed[i].close / crashed[i - 1].close - 1 for i in range(start, start + CRASH_BARS)]
    res.measurements.update(
        crash_start=bars[start].ts,
        crash_depth_ratio=-CRASH_DEPTH,
        crash_bar_moves_ratio=[round(m, 5) for m in moves],
        position_before_qty=pos0,
        position_before_notional_usd=pos0 * crashed[start - 1].close,
        decisions_in_window=requested,
        collar_denials_in_window=collar,
        halted_denials_in_window=halted,
        reducing_denials_in_window=reducing,
        risk_adding_orders_during_crash=risk_added,
        crash_day_loss_usd=loss,
        crash_day_loss_bound_usd=bound,
        max_drawdown_ratio=eng.max_drawdown,
        trading_state_end_of_crash=run.steps[start + CRASH_BARS - 1].trading_state,
        governor_breaches=eng.governor.hard_limit_breaches,
        audit_violations=run.auditor.violations[:10],
    )
    res.check("hard_limit_breaches", _breaches(run), "==", 0)
    res.check("risk_adding_orders_during_crash", risk_added, "==", 0)
    res.check("governor_interventions_in_window", collar + halted + reducing, ">=", 1 if requested else 0)
    res.check("crash_day_loss_usd", loss, "<=", bound)
