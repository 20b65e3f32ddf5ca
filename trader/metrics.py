"""Every Prometheus metric the trader exports (the trader pod contract).

All metrics carry the labels ``strategy``, ``role`` and ``stage`` (the ramp stage the pod
was started for, so the operator judges a stage only on its own pods); position notional adds
``symbol`` and orders add ``status``. Each :class:`TraderMetrics` owns its
own registry, so tests and several engines in one process do not collide.

Ratios that are undefined until there is evidence (precision before the
first scored call, slippage and fill ratio before the first order) are not
exported until then: an absent series means "no data yet", never zero.
"""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .engine import EngineStats, StepResult

PNL = "quantramp_pnl_usd"
SIMULATED_PNL = "quantramp_simulated_pnl_usd"
DRAWDOWN = "quantramp_drawdown_ratio"
MAX_DRAWDOWN = "quantramp_max_drawdown_ratio"
DAY_PNL = "quantramp_day_pnl_usd"
HOUR_PNL = "quantramp_hour_pnl_usd"
SLIPPAGE_REALIZED = "quantramp_slippage_realized_bps"
SLIPPAGE_MODELED = "quantramp_slippage_modeled_bps"
FILL_RATIO = "quantramp_fill_ratio"
PRECISION = "quantramp_model_precision_ratio"
TRADES = "quantramp_trades_total"
BARS = "quantramp_bars_total"
CAPITAL = "quantramp_capital_usd"
POSITION_NOTIONAL = "quantramp_position_notional_usd"
ORDERS = "quantramp_orders_total"
DECISION_LATENCY = "quantramp_decision_latency_seconds"

ALL_METRICS = (
    PNL,
    SIMULATED_PNL,
    DRAWDOWN,
    MAX_DRAWDOWN,
    DAY_PNL,
    HOUR_PNL,
    SLIPPAGE_REALIZED,
    SLIPPAGE_MODELED,
    FILL_RATIO,
    PRECISION,
    TRADES,
    BARS,
    CAPITAL,
    POSITION_NOTIONAL,
    ORDERS,
    DECISION_LATENCY,
)
BASE_LABELS = ("strategy", "role", "stage")
BARS_PER_HOUR = 60  # 1-minute bars: the trailing market hour of the runbook's hourly P&L alert
ORDER_STATUSES = ("filled", "partial", "rejected", "denied")
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


def _counter_name(name: str) -> str:
    # prometheus_client appends _total to counters itself
    return name[: -len("_total")] if name.endswith("_total") else name


class TraderMetrics:
    """The contract's metrics for one (strategy, role), updated from engine steps."""

    def __init__(
        self,
        strategy: str,
        role: str,
        symbol: str,
        registry: CollectorRegistry | None = None,
        stage: str = "",
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.strategy, self.role, self.symbol, self.stage = strategy, role, symbol, stage
        r, lb = self.registry, BASE_LABELS
        self._pnl = Gauge(PNL, "Live cumulative P&L net of fees (USD)", lb, registry=r)
        self._sim_pnl = Gauge(
            SIMULATED_PNL,
            "P&L of the same decisions filled at the same next-bar open with modelled slippage and fees, "
            "always fully filled (USD)",
            lb,
            registry=r,
        )
        self._drawdown = Gauge(DRAWDOWN, "(peak equity - equity) / peak equity, 0..1", lb, registry=r)
        self._max_drawdown = Gauge(MAX_DRAWDOWN, "Largest drawdown since the pod started, 0..1", lb, registry=r)
        self._day_pnl = Gauge(DAY_PNL, "P&L of the current trading day net of fees (USD)", lb, registry=r)
        self._hour_pnl = Gauge(
            HOUR_PNL, "P&L over the trailing market hour (60 one-minute bars) net of fees (USD)", lb, registry=r
        )
        self._pnl_history: deque[float] = deque([0.0], maxlen=BARS_PER_HOUR + 1)
        self._slip_real = Gauge(
            SLIPPAGE_REALIZED, "Mean realised slippage of fills vs the next-bar open (bps, share-weighted)", lb, registry=r
        )
        self._slip_model = Gauge(SLIPPAGE_MODELED, "Mean modelled slippage of the same fills (bps)", lb, registry=r)
        self._fill_ratio = Gauge(FILL_RATIO, "Filled quantity / ordered quantity, 0..1", lb, registry=r)
        self._precision = Gauge(
            PRECISION, "Share of the model's directional calls confirmed by the next bar's close, 0..1", lb, registry=r
        )
        self._trades = Counter(_counter_name(TRADES), "Filled orders", lb, registry=r)
        self._bars = Counter(_counter_name(BARS), "Bars processed", lb, registry=r)
        self._capital = Gauge(CAPITAL, "Allocated capital (USD)", lb, registry=r)
        self._position = Gauge(POSITION_NOTIONAL, "Signed position notional (USD)", lb + ("symbol",), registry=r)
        self._orders = Counter(_counter_name(ORDERS), "Orders by outcome", lb + ("status",), registry=r)
        self._latency = Histogram(
            DECISION_LATENCY, "Seconds from bar arrival to decision", lb, buckets=LATENCY_BUCKETS, registry=r
        )
        labels = {"strategy": strategy, "role": role, "stage": stage}
        self._labels = labels
        for g in (
            self._pnl, self._sim_pnl, self._drawdown, self._max_drawdown, self._day_pnl, self._hour_pnl, self._capital
        ):
            g.labels(**labels).set(0.0)
        self._trades.labels(**labels)
        self._bars.labels(**labels)
        self._position.labels(symbol=symbol, **labels).set(0.0)
        for status in ORDER_STATUSES:
            self._orders.labels(status=status, **labels)
        self._latency.labels(**labels)
        self._seen_trades = 0
        self._seen_orders = dict.fromkeys(ORDER_STATUSES, 0)

    def set_capital(self, usd: float) -> None:
        """Allocated capital, USD."""
        self._capital.labels(**self._labels).set(usd)

    def observe(self, step: StepResult, stats: EngineStats) -> None:
        """Record one engine step: counters advance by the step's deltas, gauges take the stats."""
        lb = self._labels
        self._bars.labels(**lb).inc()
        if stats.trades > self._seen_trades:
            self._trades.labels(**lb).inc(stats.trades - self._seen_trades)
            self._seen_trades = stats.trades
        for status in ORDER_STATUSES:
            n = stats.orders.get(status, 0)
            if n > self._seen_orders[status]:
                self._orders.labels(status=status, **lb).inc(n - self._seen_orders[status])
                self._seen_orders[status] = n
        self._latency.labels(**lb).observe(step.latency_s)
        self._pnl.labels(**lb).set(stats.pnl_usd)
        self._sim_pnl.labels(**lb).set(stats.simulated_pnl_usd)
        self._drawdown.labels(**lb).set(stats.drawdown_ratio)
        self._max_drawdown.labels(**lb).set(stats.max_drawdown_ratio)
        self._day_pnl.labels(**lb).set(stats.day_pnl_usd)
        self._pnl_history.append(stats.pnl_usd)
        self._hour_pnl.labels(**lb).set(stats.pnl_usd - self._pnl_history[0])
        self._position.labels(symbol=self.symbol, **lb).set(stats.position_notional_usd)
        if stats.precision_ratio is not None:
            self._precision.labels(**lb).set(stats.precision_ratio)
        if stats.fill_ratio is not None:
            self._fill_ratio.labels(**lb).set(stats.fill_ratio)
        if stats.slippage_realized_bps is not None:
            self._slip_real.labels(**lb).set(stats.slippage_realized_bps)
        if stats.slippage_modeled_bps is not None:
            self._slip_model.labels(**lb).set(stats.slippage_modeled_bps)

    def render(self) -> bytes:
        """Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
