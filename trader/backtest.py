"""Offline run of the same engine on a bar history, as fast as possible (:mod:`.replay`).

Bars of any interval the engine trades (``EngineConfig.bar_seconds``): minute bars (the
bundled sample by default), 5-minute bars, daily bars (one per XNYS session). Costs,
participation and the impact estimate follow the interval (:func:`make_engine`, :func:`impact_for`).
"""

from __future__ import annotations

import zlib

from .broker import CausalImpact, FeeSchedule, ImpactModel, SimBroker, estimate_impact_model, participation_for
from . import replay
from .engine import Engine, EngineConfig, ProbabilityModel
from .features import stream_for
from .marketdata import Bars, load_minute_bars
from .session import bars_per_session, calendar

#: floor of the denominator of the live-vs-simulated P&L ratio, as a fraction of capital
PNL_RATIO_FLOOR_FRACTION = 0.01


def stable_seed(*parts: str) -> int:
    """A deterministic 32-bit seed from strings (same across processes, unlike hash())."""
    return zlib.crc32("/".join(parts).encode())


def pnl_vs_simulated(pnl: float, sim_pnl: float, capital: float) -> float:
    """(live - simulated) / max(|simulated|, 1% of capital): the deviation the ±10% band applies to."""
    return (pnl - sim_pnl) / max(abs(sim_pnl), PNL_RATIO_FLOOR_FRACTION * capital)


def impact_for(bars: Bars, bar_seconds: int = 60) -> ImpactModel:
    """Impact model inputs estimated from the whole of ``bars`` of ``bar_seconds`` seconds
    (sigma_daily, ADV; :func:`~.session.bars_per_session`: 390 minute bars, 1 daily bar): a
    look-ahead estimate for analysis only; the engines of :func:`make_engine` cost causally."""
    return estimate_impact_model(bars.close, bars.volume, bars_per_session(bar_seconds), ts=bars.ts)


def make_engine(
    model: ProbabilityModel, config: EngineConfig, bars: Bars, seed: int = 0, fees: FeeSchedule | None = None
) -> Engine:
    """An Engine with a SimBroker seeded by ``seed`` (fees: ``fees``, default the all-in IBKR
    Tiered :class:`~.broker.FeeSchedule`; participation: :func:`~.broker.participation_for`
    the bar interval, 10 % of an intraday bar, 1 % of a daily bar) and causal costs
    (:class:`~.broker.CausalImpact`: spread and impact from past bars only; ``bars`` is not
    looked at ahead), computing the features ``model`` was registered with
    (``model.feature_spec.stream()``, :func:`~.features.stream_for`)."""
    impact = CausalImpact(bar_seconds=config.bar_seconds, session_seconds=calendar(config.calendar).session_seconds)
    # intraday: SimBroker's own default participation (10 %); daily bars: 1 % of the day
    kw = {"participation": participation_for(config.bar_seconds)} if config.daily else {}
    broker = SimBroker(impact, seed=seed, paper=config.paper, fees=fees, **kw)
    return Engine(config=config, model=model, broker=broker, impact=impact, features=stream_for(model))


def run_backtest(
    model: ProbabilityModel,
    config: EngineConfig,
    n_bars: int | None = None,
    seed: int = 0,
    bars: Bars | None = None,
    checkpoints: tuple[int, ...] = (),
) -> dict:
    """Run ``n_bars`` replayed bars of ``bars`` (default: the bundled minute sample, one pass,
    2,340) with the batch replay (:mod:`.replay`, same results as bar by bar) and summarise.
    ``bars`` must be of ``config.bar_seconds`` (:func:`~.barsource.check_spacing`).

    Returns a JSON-able dict: pnl_usd, simulated_pnl_usd, pnl_vs_simulated,
    max/final drawdown, trades, orders, precision, calls, fill_ratio,
    slippage realised/modelled (bps), fees, and the same figures at each bar
    count in ``checkpoints`` (those within 1 .. n_bars).
    """
    bars = bars if bars is not None else load_minute_bars(config.symbol)
    n = len(bars) if n_bars is None else n_bars
    eng = make_engine(model, config, bars, seed)
    at: dict[str, dict] = {}
    done = 0
    for c in sorted({c for c in checkpoints if 0 < c <= n} | {n}):
        replay.run(eng, bars, c, start=done)
        done = c
        if c in checkpoints:
            at[str(c)] = _summary(eng, config)
    out = _summary(eng, config)
    if at:
        out["checkpoints"] = at
    return out


def _summary(eng: Engine, config: EngineConfig) -> dict:
    s = eng.stats()
    return {
        "bars": s.bars,
        "capital_usd": config.capital_usd,
        "paper": config.paper,
        "entry_threshold": config.entry_threshold,
        "pnl_usd": round(s.pnl_usd, 4),
        "simulated_pnl_usd": round(s.simulated_pnl_usd, 4),
        "pnl_vs_simulated": round(pnl_vs_simulated(s.pnl_usd, s.simulated_pnl_usd, config.capital_usd), 6),
        "drawdown_ratio": round(s.drawdown_ratio, 6),
        "max_drawdown_ratio": round(s.max_drawdown_ratio, 6),
        "simulated_max_drawdown_ratio": round(s.simulated_max_drawdown_ratio, 6),
        "trades": s.trades,
        "orders": s.orders,
        "calls": s.calls,
        "precision_ratio": None if s.precision_ratio is None else round(s.precision_ratio, 4),
        "fill_ratio": None if s.fill_ratio is None else round(s.fill_ratio, 4),
        "slippage_realized_bps": None if s.slippage_realized_bps is None else round(s.slippage_realized_bps, 4),
        "slippage_modeled_bps": None if s.slippage_modeled_bps is None else round(s.slippage_modeled_bps, 4),
        "fees_usd": round(s.fees_usd, 4),
        "bar_seconds": config.bar_seconds,
        "position_qty": s.position_qty,
        "hard_limit_breaches": s.hard_limit_breaches,
    }
