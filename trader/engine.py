"""Trading engine: bars -> features -> model -> decision -> governor -> broker -> books.

The decision core is free of I/O: :meth:`Engine.on_bar` takes a bar and
returns a :class:`StepResult`; the server exports metrics from it and from
:meth:`Engine.stats`, the backtest prints them.

Timing. A decision is taken on bar t's close and filled at bar t+1's open:

1. on bar t+1, the pending order is executed by the live broker (SimBroker:
   random slippage, may fill partially) and, for the same decision, by the
   simulated book (modelled slippage, always fully filled, same open);
2. the previous bar's directional call is scored (precision);
3. both books are marked at bar t+1's close; equity = capital + live P&L;
4. features -> P(up) -> signal -> target position -> governor -> next order.

Decision rule: long if P(up) > 0.5 + threshold, short if P(up) < 0.5 -
threshold, else hold the current position. A new position is sized to
max_position_usd (whole shares); an existing position on the signalled side
is kept as is (no resizing churn). From ``flatten_before_close_s`` before the
session close the target is flat, so nothing is held overnight.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable, Protocol

import numpy as np

from . import governor as gov
from .broker import Fill, ImpactModel, SimBroker, modeled_fill
from .features import FeatureStream
from .marketdata import Bar, new_york_time, session_close_utc

#: default probability edge for an entry (go long above 0.5 + t, short below 0.5 - t)
DEFAULT_ENTRY_THRESHOLD = 0.03
#: default max position as a fraction of allocated capital
DEFAULT_POSITION_FRACTION = 0.5
#: default max order as a fraction of capital (a full flip is 2 x position)
DEFAULT_ORDER_FRACTION = 1.0
#: default daily loss cap as a fraction of capital
DEFAULT_DAILY_LOSS_FRACTION = 0.02


class ProbabilityModel(Protocol):
    """Anything that maps one feature row (shape (N_FEATURES,)) to P(next bar up)."""

    def p_up_one(self, x: np.ndarray) -> float:
        """P(next bar closes up) in [0, 1] for one feature row, shape (N_FEATURES,)."""
        ...


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings. capital_usd: allocated capital (USD). limits: governor limits.
    entry_threshold: probability edge. paper: fills are paper (shadow).
    flatten_before_close_s: seconds before the session close from which the
    target is flat (0 disables)."""

    capital_usd: float
    limits: gov.RiskLimits
    entry_threshold: float = DEFAULT_ENTRY_THRESHOLD
    paper: bool = False
    symbol: str = "AAPL"
    flatten_before_close_s: float = 120.0

    @staticmethod
    def for_capital(capital_usd: float, **kw) -> "EngineConfig":
        """Config with default limits derived from ``capital_usd`` (see module constants)."""
        limits = gov.RiskLimits(
            max_order_usd=DEFAULT_ORDER_FRACTION * capital_usd,
            max_position_usd=DEFAULT_POSITION_FRACTION * capital_usd,
            max_daily_loss_usd=DEFAULT_DAILY_LOSS_FRACTION * capital_usd,
        )
        return EngineConfig(capital_usd=capital_usd, limits=limits, **kw)


@dataclass
class Book:
    """Position and cash of one book. position: shares; cash: USD flow from trades net of fees."""

    position: int = 0
    cash: float = 0.0
    fees: float = 0.0
    mark: float = float("nan")

    def apply(self, fill: Fill) -> None:
        """Book a fill: shares, cash at the fill price, commission."""
        self.position += fill.filled_qty
        self.cash -= fill.filled_qty * fill.price + fill.commission_usd
        self.fees += fill.commission_usd

    def pnl(self) -> float:
        """P&L in USD marked at the last close (0 before the first mark)."""
        if self.position == 0:
            return self.cash
        return self.cash + self.position * self.mark


@dataclass
class _Pending:
    target: int
    live_qty: int
    decided_at: datetime


@dataclass
class StepResult:
    """What happened on one bar.

    p_up: model probability (None during warm-up). signal: +1/-1/0. target:
    position wanted after the governor (shares). order_qty: shares sent for
    the next open (0 = none). verdict: governor outcome (None if no order was
    wanted). fill / sim_fill: executions of the previous decision on this bar's
    open. latency_s: seconds from bar arrival to decision.
    """

    ts: datetime
    p_up: float | None = None
    signal: int = 0
    target: int = 0
    order_qty: int = 0
    verdict: gov.Verdict | None = None
    fill: Fill | None = None
    sim_fill: Fill | None = None
    latency_s: float = 0.0


@dataclass
class EngineStats:
    """Cumulative evidence (USD, ratios 0..1, bps)."""

    bars: int
    pnl_usd: float
    simulated_pnl_usd: float
    equity_usd: float
    drawdown_ratio: float
    max_drawdown_ratio: float
    simulated_max_drawdown_ratio: float
    trades: int
    orders: dict[str, int]
    fill_ratio: float | None
    slippage_realized_bps: float | None
    slippage_modeled_bps: float | None
    precision_ratio: float | None
    calls: int
    position_qty: int
    position_notional_usd: float
    fees_usd: float
    day_pnl_usd: float


@dataclass
class Engine:
    """Runs one strategy role on a stream of bars (see module docstring)."""

    config: EngineConfig
    model: ProbabilityModel
    broker: SimBroker
    impact: ImpactModel
    clock: Callable[[], float] = time.perf_counter
    session_close: Callable[[datetime], datetime] = session_close_utc
    features: FeatureStream = field(default_factory=FeatureStream)

    def __post_init__(self) -> None:
        self.live = Book()
        self.sim = Book()
        self.bars = 0
        self.trades = 0
        self.orders = {"filled": 0, "partial": 0, "rejected": 0, "denied": 0}
        self._ordered = 0
        self._filled = 0
        self._slip_real = 0.0
        self._slip_model = 0.0
        self._slip_shares = 0
        self.calls = 0
        self.correct = 0
        self._pending: _Pending | None = None
        self._prev_close: float | None = None
        self._prev_signal = 0
        self._day: date | None = None
        self._day_start_pnl = 0.0
        self.peak_equity = self.config.capital_usd
        self.max_drawdown = 0.0
        self._sim_peak = self.config.capital_usd
        self.sim_max_drawdown = 0.0
        self._flatten_cache: tuple[date, datetime] | None = None

    # -- evidence -----------------------------------------------------------------
    @property
    def equity(self) -> float:
        """Live equity, USD: capital + live P&L."""
        return self.config.capital_usd + self.live.pnl()

    @property
    def drawdown(self) -> float:
        """Current drawdown of live equity from its peak, 0..1."""
        return max(0.0, (self.peak_equity - self.equity) / self.peak_equity) if self.peak_equity > 0 else 1.0

    def day_pnl(self) -> float:
        """Live P&L since the start of the current session, USD."""
        return self.live.pnl() - self._day_start_pnl

    def stats(self) -> EngineStats:
        """Snapshot of the cumulative evidence."""
        mark = self.live.mark if math.isfinite(self.live.mark) else 0.0
        return EngineStats(
            bars=self.bars,
            pnl_usd=self.live.pnl(),
            simulated_pnl_usd=self.sim.pnl(),
            equity_usd=self.equity,
            drawdown_ratio=self.drawdown,
            max_drawdown_ratio=self.max_drawdown,
            simulated_max_drawdown_ratio=self.sim_max_drawdown,
            trades=self.trades,
            orders=dict(self.orders),
            fill_ratio=(self._filled / self._ordered) if self._ordered else None,
            slippage_realized_bps=(self._slip_real / self._slip_shares) if self._slip_shares else None,
            slippage_modeled_bps=(self._slip_model / self._slip_shares) if self._slip_shares else None,
            precision_ratio=(self.correct / self.calls) if self.calls else None,
            calls=self.calls,
            position_qty=self.live.position,
            position_notional_usd=self.live.position * mark,
            fees_usd=self.live.fees,
            day_pnl_usd=self.day_pnl(),
        )

    # -- the step -------------------------------------------------------------------
    def _in_flatten_window(self, ts: datetime) -> bool:
        if self.config.flatten_before_close_s <= 0:
            return False
        close = self.session_close(ts)
        return ts >= close - timedelta(seconds=self.config.flatten_before_close_s)

    def _execute_pending(self, bar: Bar, result: StepResult) -> None:
        p = self._pending
        self._pending = None
        if p is None:
            return
        if p.live_qty:
            fill = self.broker.execute(p.live_qty, bar.open, bar.volume)
            result.fill = fill
            self.orders[fill.status] += 1
            self._ordered += abs(fill.ordered_qty)
            self._filled += abs(fill.filled_qty)
            if fill.filled_qty:
                self.trades += 1
                self.live.apply(fill)
                n = abs(fill.filled_qty)
                self._slip_real += fill.slippage_bps * n
                self._slip_model += fill.modeled_slippage_bps * n
                self._slip_shares += n
        sim_qty = p.target - self.sim.position
        if sim_qty:
            sf = modeled_fill(sim_qty, bar.open, self.impact, paper=self.config.paper)
            result.sim_fill = sf
            self.sim.apply(sf)

    def _mark(self, close: float) -> None:
        self.live.mark = close
        self.sim.mark = close
        eq = self.equity
        self.peak_equity = max(self.peak_equity, eq)
        self.max_drawdown = max(self.max_drawdown, self.drawdown)
        seq = self.config.capital_usd + self.sim.pnl()
        self._sim_peak = max(self._sim_peak, seq)
        if self._sim_peak > 0:
            self.sim_max_drawdown = max(self.sim_max_drawdown, (self._sim_peak - seq) / self._sim_peak)

    def _score_previous_call(self, close: float) -> None:
        if self._prev_signal and self._prev_close is not None:
            move = close - self._prev_close
            if move != 0:  # unchanged closes neither confirm nor refute a call
                self.calls += 1
                if (move > 0) == (self._prev_signal > 0):
                    self.correct += 1

    def on_bar(self, bar: Bar) -> StepResult:
        """Process one bar (see module docstring) and return what happened."""
        t0 = self.clock()
        result = StepResult(ts=bar.ts)
        prices_ok = all(math.isfinite(v) and v > 0 for v in (bar.open, bar.high, bar.low, bar.close))
        prices_ok = prices_ok and math.isfinite(bar.volume) and bar.volume >= 0
        self.bars += 1

        day = new_york_time(bar.ts).date()
        if day != self._day:
            self._day = day
            self._day_start_pnl = self.live.pnl()

        if not prices_ok:
            # fail closed: cancel what was pending (rejected), take no decision on a bad bar
            cancelled = self._pending is not None and self._pending.live_qty != 0
            if cancelled:
                self.orders["rejected"] += 1
                self._ordered += abs(self._pending.live_qty)
            self._pending = None
            self._prev_signal = 0
            result.verdict = gov.Verdict(0, (gov.Reason.INVALID_PRICE,), denied=cancelled)
            result.latency_s = self.clock() - t0
            return result

        self._execute_pending(bar, result)
        self._score_previous_call(bar.close)
        self._mark(bar.close)

        x = self.features.update(bar.high, bar.low, bar.close, bar.volume)
        signal = 0
        pos = self.live.position
        target = pos
        if x is not None:
            p = float(self.model.p_up_one(x))
            result.p_up = p
            thr = self.config.entry_threshold
            if math.isfinite(p):
                signal = 1 if p > 0.5 + thr else (-1 if p < 0.5 - thr else 0)
            if signal and pos * signal <= 0:
                target = signal * int(self.config.limits.max_position_usd // bar.close)
        if self._in_flatten_window(bar.ts):
            target = 0
        result.signal = signal
        self._prev_signal = signal
        self._prev_close = bar.close

        if target != pos:
            verdict = gov.check(target, pos, bar.close, self.day_pnl(), self.config.limits)
            result.verdict = verdict
            if verdict.denied:
                self.orders["denied"] += 1
            if verdict.order_qty:
                result.order_qty = verdict.order_qty
                self._pending = _Pending(pos + verdict.order_qty, verdict.order_qty, bar.ts)
        result.target = pos + result.order_qty
        result.latency_s = self.clock() - t0
        return result
