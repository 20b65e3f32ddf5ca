"""Stress scenario ``broker_failure`` (see :mod:`quantramp.trader.stress`).
"""

from __future__ import annotations

from ...broker import Order, OrderState, SimBroker
from ...engine import Engine, StepResult
from ...marketdata import Bar
from ..base import Context, ScenarioResult, THRESHOLDS, _breaches, bar_list, new_engine, run_engine


# -- scenario: broker failures ----------------------------------------------------------------------
#: broker_failure: share of a bar's volume the SimBroker may fill (AAPL minute volume ~94k shares at
#: the median: a cap of 0 to 2 shares, so many of the pod's orders go unfilled or part-filled)
PARTICIPATION = 1e-5

def scenario_broker_failure(ctx: Context, res: ScenarioResult) -> None:
    """The pod's own order path (Engine._send -> SimBroker order API) under 5 % chaos rejects and a
    participation cap so low that many orders fill partly or not at all: every decision reaches the broker at
    most once (ids counted at the broker's door), the engine's position equals the broker's after
    every bar, and the engine's cash equals the cash rebuilt from the broker's executions."""
    eng = new_engine(ctx.model, ctx.bars, ctx.seed)
    sim = SimBroker(eng.impact, seed=ctx.seed, chaos_reject_rate=0.05, participation=PARTICIPATION)
    eng.broker = sim
    submitted: dict[str, int] = {}
    real_submit = sim.submit

    def counting(order: Order):
        submitted[order.order_id] = submitted.get(order.order_id, 0) + 1
        return real_submit(order)

    sim.submit = counting
    mismatches: list[str] = []

    def after(i: int, bar: Bar, s: StepResult) -> None:
        bpos = sim.positions().get("AAPL", 0)
        if bpos != eng.live.position and len(mismatches) < 10:
            mismatches.append(f"{bar.ts.isoformat()}: engine {eng.live.position} broker {bpos}")

    run = run_engine(eng, ctx.bar_list, after)
    decisions = sum(1 for s in run.steps if s.order_qty)
    orders = sim.book.all()
    duplicates = sum(c - 1 for c in submitted.values())
    overfilled = sum(1 for u in orders if abs(u.filled_qty) > abs(u.order.qty) or u.filled_qty * u.order.qty < 0)
    broker_cash = -sum(u.filled_qty * u.avg_price + u.commission_usd for u in orders if u.filled_qty)
    cash_diff = abs(broker_cash - eng.live.cash)
    states: dict[str, int] = {}
    for u in orders:
        states[u.state.value] = states.get(u.state.value, 0) + 1
    rejects = sum(1 for u in orders if u.state == OrderState.REJECTED and u.reason.startswith("chaos"))
    short = sum(1 for u in orders if u.filled_qty != u.order.qty and u.state != OrderState.REJECTED)
    res.measurements.update(
        bars=len(run.steps), decisions=decisions, broker_orders=len(orders), orders_by_state=states,
        chaos_rejects=rejects, not_fully_filled=short, duplicate_orders=duplicates, overfilled_orders=overfilled,
        engine_position_qty=eng.live.position, broker_position_qty=sim.positions().get("AAPL", 0),
        position_mismatches=mismatches, engine_cash_usd=eng.live.cash, broker_cash_usd=broker_cash,
        cash_diff_usd=cash_diff, engine_fill_ratio=eng.stats().fill_ratio, audit_violations=run.auditor.violations[:10],
    )
    res.check("faults_injected", rejects + short, ">=", 10)
    res.check("duplicate_orders", duplicates, "==", 0)
    res.check("broker_orders_le_decisions", len(submitted) - decisions, "<=", 0)
    res.check("overfilled_orders", overfilled, "==", 0)
    res.check("position_mismatch_bars", len(mismatches), "==", 0)
    res.check("cash_diff_usd", cash_diff, "<=", THRESHOLDS["reconcile_cash_tolerance_usd"])
    res.check("hard_limit_breaches", _breaches(run), "==", 0)
