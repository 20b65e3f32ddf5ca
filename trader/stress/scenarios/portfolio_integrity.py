"""Stress scenario ``portfolio_integrity`` (see :mod:`quantramp.trader.stress`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Iterable

from ...broker import Fill, SimBroker
from ..base import Context, SEED_CHAOS_REJECT_RATE, ScenarioResult, THRESHOLDS, _breaches, bar_list, new_engine, run_engine
from ..pods import Pod


# -- scenario: portfolio integrity --------------------------------------------------------------------
def rebuild_from_fills(fills: Iterable[Fill], mark: float) -> dict[str, float]:
    """Position, cash, fees and P&L of a book rebuilt from its fills alone (USD, shares)."""
    pos, cash, fees = 0, 0.0, 0.0
    for f in fills:
        if f.filled_qty:
            pos += f.filled_qty
            cash -= f.filled_qty * f.price + f.commission_usd
            fees += f.commission_usd
    return {"position_qty": pos, "cash_usd": cash, "fees_usd": fees, "pnl_usd": cash + pos * mark if pos else cash}

async def _integrity_redis(ctx: Context, res: ScenarioResult, url: str) -> None:
    from ...state import parse_book

    n1 = 1200
    a = Pod(ctx, url, "integrity")
    stop = asyncio.Event()
    try:
        assert await a.rt.load(stop)
        for bar in ctx.bar_list[:n1]:
            await a.rt.on_bar(bar, 0.0)
        snap_a = json.loads(json.dumps(a.engine.snapshot()))
        raw = await a.store.client.hgetall(a.keys.book(a.rt.day))
        saved, _ = parse_book(raw)
        restarted_redis = False
        if ctx.own_redis is not None and url == ctx.own_redis.url:
            await a.store.client.aclose()
            ctx.own_redis.kill()  # a crash: what was acknowledged must come back from the AOF
            ctx.own_redis.start()
            restarted_redis = True
        b = Pod(ctx, url, "integrity", ns=a.settings.namespace)
        try:
            assert await b.rt.load(stop)
            snap_b = json.loads(json.dumps(b.engine.snapshot()))
            diff = sorted(k for k in set(snap_a) | set(snap_b) if snap_a.get(k) != snap_b.get(k))
            # both continue on the same bars: an exact resume gives the same books
            for bar in ctx.bar_list[n1 : n1 + 600]:
                a.engine.on_bar(bar)
                b.engine.on_bar(bar)
            cont = sorted(k for k, v in a.engine.snapshot().items() if b.engine.snapshot().get(k) != v)
            res.measurements.update(
                redis_restarted_from_aof=restarted_redis,
                bars_before_restart=n1,
                redis_book_equals_engine=saved == snap_a,
                restored_state_diff_fields=diff,
                resumed_position_qty=b.engine.live.position,
                resumed_pnl_usd=b.engine.live.pnl(),
                resumed_peak_equity_usd=b.engine.peak_equity,
                resumed_turnover_usd=b.engine.governor_state.turnover_usd,
                continuation_diff_fields_after_600_bars=cont,
            )
            res.check("redis_book_equals_engine", saved == snap_a, "==", True)
            res.check("restored_state_diff_fields", len(diff), "==", 0)
            res.check("continuation_diff_fields", len(cont), "==", 0)
        finally:
            await b.close()
    finally:
        await a.close()

def scenario_portfolio_integrity(ctx: Context, res: ScenarioResult) -> None:
    eng = new_engine(ctx.model, ctx.bars, ctx.seed)
    sim = SimBroker(eng.impact, seed=ctx.seed, chaos_reject_rate=SEED_CHAOS_REJECT_RATE)
    eng.broker = sim
    run = run_engine(eng, ctx.bar_list)
    mark = eng.live.mark
    rb = rebuild_from_fills([s.fill for s in run.steps if s.fill is not None], mark)
    orders = sim.book.all()
    broker_pos = sim.positions().get("AAPL", 0)
    broker_cash = -sum(u.filled_qty * u.avg_price + u.commission_usd for u in orders if u.filled_qty)
    diffs = {
        "position_engine_minus_fills": eng.live.position - rb["position_qty"],
        "position_broker_minus_fills": broker_pos - rb["position_qty"],
        "cash_engine_minus_fills_usd": eng.live.cash - rb["cash_usd"],
        "cash_broker_minus_fills_usd": broker_cash - rb["cash_usd"],
        "fees_engine_minus_fills_usd": eng.live.fees - rb["fees_usd"],
        "pnl_engine_minus_fills_usd": eng.live.pnl() - rb["pnl_usd"],
        "stats_pnl_minus_fills_usd": eng.stats().pnl_usd - rb["pnl_usd"],
    }
    worst = max(abs(v) for v in diffs.values())
    res.measurements.update(
        bars=len(run.steps),
        fills=sum(1 for st in run.steps if st.fill is not None and st.fill.filled_qty),
        chaos_rejects=sum(1 for u in orders if u.reason.startswith("chaos")),
        rebuilt=rb,
        engine={"position_qty": eng.live.position, "cash_usd": eng.live.cash, "pnl_usd": eng.live.pnl(), "fees_usd": eng.live.fees},
        broker_position_qty=broker_pos,
        diffs=diffs,
    )
    res.check("fills_vs_engine_vs_broker_max_abs_diff", worst, "<=", THRESHOLDS["reconcile_cash_tolerance_usd"])
    res.check("hard_limit_breaches", _breaches(run), "==", 0)
    asyncio.run(_integrity_redis(ctx, res, ctx.redis_url))
