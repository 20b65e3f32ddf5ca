"""Several symbols in one trader: one :class:`~.engine.Engine` per symbol, one governor.

A strategy role that trades N symbols runs them in one pod as a :class:`Portfolio`:

- **Capital**: the role's capital is split equally, capital / N per symbol (the seed
  manual's multi-symbol day: MSFT and AAPL at $10 notional each). Each engine sizes
  its entries on its share.
- **One governor, shared** (:mod:`.governor`: it was built for all symbols of a role).
  Its limits are resolved on the role's whole capital: ``max_position_usd`` caps each
  symbol, ``max_gross_position_usd`` and the capital fraction cap the sum over the
  symbols, and ``max_daily_loss_usd`` is the **combined loss cap** (seed 000,
  "Wednesday: Add AAPL $10 Notional": "Combined risk limits: total_loss_cap = 30 #
  $30 combined"). The governor is marked with the portfolio's equity and day P&L
  (:attr:`~.engine.Engine.totals`), so a loss on MSFT halts AAPL as well, and the
  drawdown limits act on the sum. Turnover, the order throttle and the duplicate
  check count every symbol's orders.
- **Day P&L** of the portfolio: the sum over the engines whose last bar is on the
  newest trading date. An engine that has not seen today's first bar yet counts 0,
  never yesterday's P&L (which would halt today on yesterday's loss).
- **Bars** are routed by :attr:`~.marketdata.Bar.symbol`.

The runtime (:mod:`.server`) uses a Portfolio where it would use an Engine: the
members it needs (stats, snapshot/restore, allocation, resume, order intents) are
here, aggregated; per-order work (write-ahead, cancel, flatten) goes engine by engine
through :attr:`Portfolio.engines`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

from . import governor as gov
from .engine import Engine, EngineConfig, EngineStats, StepResult
from .marketdata import Bar

#: snapshot format of a portfolio (an engine's snapshot has no "symbols" key)
SNAPSHOT_KIND = "portfolio/v1"


class Portfolio:
    """The engines of one role, one per symbol, under one governor (see module docstring).

    ``engines``: symbol -> Engine, each configured with its share of the capital (USD) and
    its symbol; at least two. ``limits``: the role's governor limits (unresolved: unset ones
    derive from the whole capital). Raises ValueError on fewer than two engines, a symbol
    that does not match its engine's config, or engines of different bar lengths.
    """

    def __init__(self, engines: Mapping[str, Engine], limits: gov.RiskLimits) -> None:
        if len(engines) < 2:
            raise ValueError("a portfolio has at least two symbols (one symbol: use the Engine)")
        for sym, e in engines.items():
            if e.config.symbol != sym:
                raise ValueError(f"engine for {sym!r} is configured for {e.config.symbol!r}")
        if len({e.config.bar_seconds for e in engines.values()}) != 1:
            raise ValueError("every symbol of a portfolio has the same bar length")
        self.engines: dict[str, Engine] = dict(engines)
        self.symbols = tuple(self.engines)
        first = next(iter(self.engines.values()))
        capital = sum(e.config.capital_usd for e in self.engines.values())
        self.config: EngineConfig = replace(first.config, capital_usd=capital, limits=limits, symbol=",".join(self.symbols))
        self.limits = limits.resolved(capital)
        self.governor_state = gov.GovernorState()
        self.governor = gov.Governor(self.limits, self.governor_state)
        self.max_drawdown = 0.0
        self.sim_max_drawdown = 0.0
        self._sim_peak = capital
        self._link()

    # -- the shared governor --------------------------------------------------------------------
    def _link(self) -> None:
        """Point every engine at the one governor (its state and limits) and at the portfolio's totals."""
        for e in self.engines.values():
            e.governor_state, e.limits, e.governor = self.governor_state, self.limits, self.governor
            e.totals = self.totals

    def totals(self) -> tuple[float, float]:
        """(equity USD, day P&L USD) of the portfolio: capital + P&L over every symbol, and the day
        P&L of the engines whose last bar is on the newest trading date (the others count 0)."""
        engines = self.engines.values()
        equity = sum(e.equity for e in engines)
        days = [e.day for e in engines if e.day is not None]
        today = max(days) if days else None
        day_pnl = sum(e.day_pnl() for e in engines if e.day == today and today is not None)
        return equity, day_pnl

    @property
    def peak_equity(self) -> float:
        """Peak of the portfolio's equity, USD (the governor's)."""
        return self.governor_state.peak_equity_usd

    @property
    def sessions(self):
        """The trading calendar of the first symbol (every symbol trades XNYS sessions today)."""
        return next(iter(self.engines.values())).sessions

    # -- bars -----------------------------------------------------------------------------------
    def engine_for(self, bar: Bar) -> Engine:
        """The engine of ``bar.symbol``; raises KeyError (with the symbols traded) for another one."""
        try:
            return self.engines[bar.symbol]
        except KeyError:
            raise KeyError(f"bar of {bar.symbol!r}: this trader trades {', '.join(self.symbols)}") from None

    def on_bar(self, bar: Bar) -> StepResult:
        """Step the engine of ``bar.symbol`` (see :meth:`.engine.Engine.on_bar`); track the
        portfolio's drawdowns (live and simulated, ratios 0..1)."""
        step = self.engine_for(bar).on_bar(bar)
        self._track()
        return step

    def prime(self, bar: Bar) -> bool:
        """Warm the engine of ``bar.symbol`` up with a bar of history (:meth:`.engine.Engine.prime`)."""
        return self.engine_for(bar).prime(bar)

    def _track(self) -> None:
        equity, _ = self.totals()
        peak = self.governor_state.peak_equity_usd
        if peak > 0 and equity < peak:
            self.max_drawdown = max(self.max_drawdown, (peak - equity) / peak)
        sim = self.config.capital_usd + sum(e.sim.pnl() for e in self.engines.values())
        self._sim_peak = max(self._sim_peak, sim)
        if self._sim_peak > 0:
            self.sim_max_drawdown = max(self.sim_max_drawdown, (self._sim_peak - sim) / self._sim_peak)

    # -- evidence -------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        """The role's cumulative evidence over every symbol (what the operator judges): sums of
        P&L, fees, trades and orders; fill ratio, slippage (share-weighted) and precision from
        the pooled counts; drawdown of the summed equity. ``by_symbol``: each symbol's position
        (shares), notional and P&L (USD), trades."""
        es = list(self.engines.values())
        per = {s: e.stats() for s, e in self.engines.items()}
        ordered = sum(e._ordered for e in es)
        filled = sum(e._filled for e in es)
        shares = sum(e._slip_shares for e in es)
        calls = sum(e.calls for e in es)
        equity, day_pnl = self.totals()
        peak = self.peak_equity
        orders: dict[str, int] = {}
        refused: dict[str, int] = {}
        evidence: dict = {}
        for st in per.values():
            for k, v in st.orders.items():
                orders[k] = orders.get(k, 0) + v
            for k, v in st.bars_refused.items():
                refused[k] = refused.get(k, 0) + v
            for k, v in st.evidence.items():
                evidence[k] = v if k not in evidence else evidence[k].plus(v)  # pooled observations
        first = next(iter(per.values()))
        return EngineStats(
            bars=sum(st.bars for st in per.values()),
            pnl_usd=sum(st.pnl_usd for st in per.values()),
            simulated_pnl_usd=sum(st.simulated_pnl_usd for st in per.values()),
            equity_usd=equity,
            drawdown_ratio=max(0.0, (peak - equity) / peak) if peak > 0 else 1.0,
            max_drawdown_ratio=self.max_drawdown,
            simulated_max_drawdown_ratio=self.sim_max_drawdown,
            trades=sum(st.trades for st in per.values()),
            orders=orders,
            fill_ratio=(filled / ordered) if ordered else None,
            slippage_realized_bps=(sum(e._slip_real for e in es) / shares) if shares else None,
            slippage_modeled_bps=(sum(e._slip_model for e in es) / shares) if shares else None,
            precision_ratio=(sum(e.correct for e in es) / calls) if calls else None,
            calls=calls,
            position_qty=sum(abs(st.position_qty) for st in per.values()),
            position_notional_usd=sum(st.position_notional_usd for st in per.values()),
            fees_usd=sum(st.fees_usd for st in per.values()),
            day_pnl_usd=day_pnl,
            governor_denials=first.governor_denials,
            hard_limit_breaches=first.hard_limit_breaches,
            governor_halts=dict(self.governor_state.halts),
            trading_state=self.governor_state.trading_state,
            daily_turnover_usd=self.governor_state.turnover_usd,
            bars_refused=refused,
            evidence=evidence,
            by_symbol={s: {"position_qty": st.position_qty, "position_notional_usd": st.position_notional_usd,
                           "pnl_usd": st.pnl_usd, "trades": st.trades} for s, st in per.items()},
        )

    # -- durable state --------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Every engine's snapshot by symbol (each carries the shared governor state; :meth:`restore`
        takes it once) and the portfolio's own drawdown bookkeeping; JSON-able."""
        return {
            "kind": SNAPSHOT_KIND,
            "symbols": {s: e.snapshot() for s, e in self.engines.items()},
            "max_drawdown": self.max_drawdown,
            "sim_max_drawdown": self.sim_max_drawdown,
            "sim_peak": self._sim_peak,
        }

    def restore(self, snap: dict) -> None:
        """Resume from :meth:`snapshot`. Raises ValueError if it is not a portfolio's snapshot or
        its symbols are not this portfolio's (a changed symbol list starts no book by guessing)."""
        if snap.get("kind") != SNAPSHOT_KIND or not isinstance(snap.get("symbols"), dict):
            raise ValueError("the saved book is not a several-symbol book (the strategy's symbols changed?)")
        if set(snap["symbols"]) != set(self.engines):
            raise ValueError(f"the saved book trades {sorted(snap['symbols'])}, this trader {sorted(self.engines)}")
        denials: dict[str, int] = {}
        breaches = 0
        for s, e in self.engines.items():
            e.restore(snap["symbols"][s])
            denials, breaches = dict(e.governor.denials), e.governor.hard_limit_breaches
        state = next(iter(self.engines.values())).governor_state  # the same in every engine's snapshot
        self.governor_state = state
        self.governor = gov.Governor(self.limits, state)
        self.governor.denials.update(denials)
        self.governor.hard_limit_breaches = breaches
        self.max_drawdown = float(snap.get("max_drawdown", 0.0))
        self.sim_max_drawdown = float(snap.get("sim_max_drawdown", 0.0))
        self._sim_peak = float(snap.get("sim_peak", self.config.capital_usd))
        self._link()

    # -- allocation, resume, orders ---------------------------------------------------------------
    def rebase_capital(self, delta_usd: float) -> None:
        """The role's capital changed by ``delta_usd`` (USD) since the state was saved: each symbol's
        share moves by delta / N; the governor's peak (once) and the simulated peak by the delta."""
        n = len(self.engines)
        capital = self.config.capital_usd + delta_usd
        self._set_capital(capital)
        self.governor.rebase_capital(delta_usd)
        self._sim_peak += delta_usd
        for e in self.engines.values():
            e._sim_peak += delta_usd / n

    def reallocate(self, capital_usd: float, limits: gov.RiskLimits) -> None:
        """A live allocation (:mod:`.allocation`): the whole capital ``capital_usd`` (USD, split
        equally) and the role's limits, resolved on it. Raises ValueError on a capital that is not
        positive and finite."""
        if not (math.isfinite(capital_usd) and capital_usd > 0):
            raise ValueError(f"capital must be positive and finite, got {capital_usd!r}")
        delta = capital_usd - self.config.capital_usd
        self.config = replace(self.config, limits=limits)
        self.limits = limits.resolved(capital_usd)
        old, self.governor = self.governor, gov.Governor(self.limits, self.governor_state)
        # the counters live on the governor object (exported as monotone counters): carried over
        self.governor.denials, self.governor.hard_limit_breaches = old.denials, old.hard_limit_breaches
        self.rebase_capital(delta)
        self._link()

    def _set_capital(self, capital_usd: float) -> None:
        n = len(self.engines)
        self.config = replace(self.config, capital_usd=capital_usd)
        for e in self.engines.values():
            e.config = replace(e.config, capital_usd=capital_usd / n)

    def resume(self, by: str, reason: str, at: str) -> dict:
        """Lift the (one) governor's halt by a recorded action; returns the record."""
        return self.governor.resume(by=by, reason=reason, at=at)

    def recover_intent(self, order_id: str) -> str:
        """After a restart: the engine whose symbol the written-ahead ``order_id`` names decides
        (:meth:`.engine.Engine.recover_intent`); "none" if no engine has it working."""
        for s, e in self.engines.items():
            if order_id.startswith(f"{s}-"):
                what = e.recover_intent(order_id)
                if what != "none":
                    return what
        return "none"

    def reconcile(self) -> int:
        """Reconcile every symbol with the broker (:meth:`.engine.Engine.reconcile`); returns the
        shares booked over all symbols (absolute)."""
        return sum(abs(e.reconcile()) for e in self.engines.values())


__all__ = ["Portfolio", "SNAPSHOT_KIND"]
