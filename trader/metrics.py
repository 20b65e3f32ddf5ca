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
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .engine import EngineStats, StepResult

from .contract import (  # noqa: E402  (the names live in the evidence contract)
    BARS,
    CAPITAL,
    DAY_PNL,
    DECISION_LATENCY,
    DRAWDOWN,
    EVIDENCE_FAMILIES,
    EVIDENCE_STREAM_LABELS,
    FEE_RATIO,
    FEES,
    FILL_RATIO,
    HOUR_PNL,
    MAX_DRAWDOWN,
    ORDERS,
    PNL,
    POSITION_NOTIONAL,
    PRECISION,
    SIMULATED_PNL,
    SLIPPAGE_MODELED,
    SLIPPAGE_REALIZED,
    TRADES,
    TRADING_DATE,
)

ALL_METRICS = (
    PNL,
    SIMULATED_PNL,
    DRAWDOWN,
    MAX_DRAWDOWN,
    DAY_PNL,
    HOUR_PNL,
    TRADING_DATE,
    FEES,
    FEE_RATIO,
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
from .contract import BASE_LABELS, SYMBOL_PNL, SYMBOL_TRADES  # noqa: E402
#: the trailing market hour of the runbook's hourly P&L alert, seconds of market time (any bar length)
HOUR_S = 3600.0
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
        scope: str = "",
        symbols: tuple[str, ...] = (),
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.strategy, self.role, self.symbol, self.stage = strategy, role, symbol, stage
        self.scope = scope or stage
        self._evidence: dict = {}
        self.registry.register(_EvidenceCollector(self))
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
            HOUR_PNL, "P&L over the trailing market hour net of fees (USD): now minus the last P&L seen an hour or "
                      "more of market time before the last bar (the first bar's before that)", lb, registry=r
        )
        self._trading_date = Gauge(TRADING_DATE, "Trading day (market time) of the last bar, as the number YYYYMMDD", lb,
                                   registry=r)
        self._fees = Gauge(FEES, "Commissions paid (USD)", lb, registry=r)
        self._fee_ratio = Gauge(
            FEE_RATIO,
            "Commissions / |gross P&L| (gross = net P&L + commissions); absent while gross P&L is 0",
            lb,
            registry=r,
        )
        #: (bar time, P&L USD) of the trailing market hour, and the last one before it
        self._pnl_history: deque[tuple[datetime, float]] = deque()
        self._pnl_hour_ago = 0.0
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
        #: a several-symbol role's symbols (their breakdown is exported); () for one symbol
        self.symbols = tuple(symbols) if len(symbols) > 1 else ()
        for sym in self.symbols or (symbol,):
            self._position.labels(symbol=sym, **labels).set(0.0)
        self._symbol_pnl = Gauge(SYMBOL_PNL, "Live P&L of one symbol of the role net of fees (USD)", lb + ("symbol",),
                                 registry=r)
        self._symbol_trades = Counter(_counter_name(SYMBOL_TRADES), "Filled orders of one symbol of the role",
                                      lb + ("symbol",), registry=r)
        self._seen_symbol_trades = dict.fromkeys(self.symbols, 0)
        for sym in self.symbols:
            self._symbol_pnl.labels(symbol=sym, **labels).set(0.0)
            self._symbol_trades.labels(symbol=sym, **labels)
        for status in ORDER_STATUSES:
            self._orders.labels(status=status, **labels)
        self._latency.labels(**labels)
        self._seen_trades = 0
        self._seen_orders = dict.fromkeys(ORDER_STATUSES, 0)
        self.governor = GovernorMetrics(self)

    def set_capital(self, usd: float) -> None:
        """Allocated capital, USD."""
        self._capital.labels(**self._labels).set(usd)

    def set_trading_date(self, day: str) -> None:
        """The trading day of the last bar, ``YYYY-MM-DD`` (exported as the number YYYYMMDD)."""
        self._trading_date.labels(**self._labels).set(float(day.replace("-", "")))

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
        hist = self._pnl_history
        hist.append((step.ts, stats.pnl_usd))
        while hist and (step.ts - hist[0][0]).total_seconds() >= HOUR_S:
            self._pnl_hour_ago = hist.popleft()[1]
        self._hour_pnl.labels(**lb).set(stats.pnl_usd - self._pnl_hour_ago)
        self._fees.labels(**lb).set(stats.fees_usd)
        gross = stats.pnl_usd + stats.fees_usd
        if gross:
            self._fee_ratio.labels(**lb).set(stats.fees_usd / abs(gross))
        if stats.by_symbol:
            for sym, d in stats.by_symbol.items():
                self._position.labels(symbol=sym, **lb).set(d["position_notional_usd"])
                self._symbol_pnl.labels(symbol=sym, **lb).set(d["pnl_usd"])
                seen = self._seen_symbol_trades.get(sym, 0)
                if d["trades"] > seen:
                    self._symbol_trades.labels(symbol=sym, **lb).inc(d["trades"] - seen)
                    self._seen_symbol_trades[sym] = d["trades"]
        else:
            self._position.labels(symbol=self.symbol, **lb).set(stats.position_notional_usd)
        if stats.precision_ratio is not None:
            self._precision.labels(**lb).set(stats.precision_ratio)
        if stats.fill_ratio is not None:
            self._fill_ratio.labels(**lb).set(stats.fill_ratio)
        if stats.slippage_realized_bps is not None:
            self._slip_real.labels(**lb).set(stats.slippage_realized_bps)
        if stats.slippage_modeled_bps is not None:
            self._slip_model.labels(**lb).set(stats.slippage_modeled_bps)
        self._evidence = stats.evidence
        self.governor.observe(stats)

    def render(self) -> bytes:
        """Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class _EvidenceCollector:
    """Exports the engine's evidence-stream sums (:mod:`.evidence`) as the counter families of
    :data:`~.contract.EVIDENCE_FAMILIES`, labelled ``criterion`` and ``scope``: the values are the
    engine's own running sums (restored with its durable state after a restart), taken at the last
    observed step, so nothing is exported before the first step."""

    def __init__(self, base: "TraderMetrics") -> None:
        self.base = base

    def describe(self):
        return []

    def collect(self):
        b = self.base
        labels = list(BASE_LABELS) + list(EVIDENCE_STREAM_LABELS)
        sums = b._evidence
        for fld, name in EVIDENCE_FAMILIES.items():
            fam = CounterMetricFamily(_counter_name(name), "Evidence stream of a criterion: " + fld, labels=labels)
            for criterion, s in sums.items():
                fam.add_metric([b.strategy, b.role, b.stage, criterion, b.scope], getattr(s, fld))
            yield fam


# -- pod runtime: durable state, kill switch, pause gate (trader/server.py) -----------------------
from .contract import FEED_LATENCY, KILL_ACK, KILL_LATCH, ORDERS_BLOCKED, PAUSED, REDIS_UP  # noqa: E402

RUNTIME_METRICS = (KILL_LATCH, REDIS_UP, PAUSED, KILL_ACK, FEED_LATENCY, ORDERS_BLOCKED)
#: why the runtime withheld an order from the broker
BLOCK_REASONS = ("kill", "paused", "redis_down")


class RuntimeMetrics:
    """Gauges of the pod runtime, registered in the same registry and with the same labels as ``base``.

    quantramp_redis_up is 1 while durable state is being written, 0 while Redis is
    unreachable, and absent in dev mode (no REDIS_URL). quantramp_kill_ack_seconds is the
    last kill/unkill propagation time (send to acknowledgement), absent until one arrives
    with a send time.
    """

    def __init__(self, base: TraderMetrics, durable: bool) -> None:
        r, lb = base.registry, BASE_LABELS
        self._labels = dict(base._labels)
        self._kill = Gauge(KILL_LATCH, "1 while the strategy's kill latch is engaged (no new orders)", lb, registry=r)
        self._redis = Gauge(REDIS_UP, "1 while the trader's durable state in Redis is reachable", lb, registry=r)
        self._paused = Gauge(PAUSED, "1 while the pause gate withholds orders (feed not yet timely)", lb, registry=r)
        self._ack = Gauge(KILL_ACK, "Seconds from sending the last kill message to this pod's acknowledgement", lb,
                          registry=r)
        self._feed = Gauge(FEED_LATENCY, "Feed latency of the last bar (seconds; replay: lateness vs schedule)", lb,
                           registry=r)
        self._blocked = Counter(_counter_name(ORDERS_BLOCKED), "Orders withheld from the broker by the runtime",
                                lb + ("reason",), registry=r)
        lab = self._labels
        self._kill.labels(**lab).set(0)
        self._paused.labels(**lab).set(0)
        self._feed.labels(**lab).set(0)
        if durable:
            self._redis.labels(**lab).set(0)
        for reason in BLOCK_REASONS:
            self._blocked.labels(reason=reason, **lab)

    def set_kill(self, engaged: bool) -> None:
        """Kill latch engaged (1) or not (0)."""
        self._kill.labels(**self._labels).set(1 if engaged else 0)

    def set_redis_up(self, up: bool) -> None:
        """Durable state reachable (1) or not (0)."""
        self._redis.labels(**self._labels).set(1 if up else 0)

    def set_paused(self, paused: bool) -> None:
        """Pause gate closed (1) or open (0)."""
        self._paused.labels(**self._labels).set(1 if paused else 0)

    def set_kill_ack(self, seconds: float) -> None:
        """Propagation time of the last kill message, seconds."""
        self._ack.labels(**self._labels).set(seconds)

    def set_feed_latency(self, seconds: float) -> None:
        """Feed latency of the last bar, seconds."""
        self._feed.labels(**self._labels).set(seconds)

    def blocked(self, reason: str) -> None:
        """Count one order withheld for ``reason`` (one of BLOCK_REASONS)."""
        self._blocked.labels(reason=reason, **self._labels).inc()


# -- pre-trade governor (trader/governor.py) ------------------------------------------------------
from .contract import DAILY_TURNOVER, GOVERNOR_DENIALS, GOVERNOR_HALTS, HARD_LIMIT_BREACHES, TRADING_STATE  # noqa: E402

GOVERNOR_METRICS = (GOVERNOR_DENIALS, GOVERNOR_HALTS, HARD_LIMIT_BREACHES, TRADING_STATE, DAILY_TURNOVER)
#: bars the engine refused before they moved any state, by reason (trader/barcheck.py; a new series)
from .contract import BARS_REFUSED  # noqa: E402


class GovernorMetrics:
    """Governor evidence in ``base``'s registry with its labels, updated from :class:`EngineStats`.

    quantramp_governor_denials_total{reason}: limit actions (denials and clips) by reason code;
    every reason is pre-created at 0. quantramp_governor_halts_total{reason}: entries into HALTED
    by cause (daily_loss_limit, drawdown_halt, manual_halt, ...). quantramp_hard_limit_breaches_total: fills that broke a hard
    limit (must stay 0). quantramp_trading_state: 0 ACTIVE, 1 REDUCING, 2 HALTED.
    quantramp_daily_turnover_usd: notional traded in the current trading day.
    quantramp_bars_refused_total{reason}: bars refused by the bar check (:data:`~.barcheck.REASONS`).
    """

    def __init__(self, base: TraderMetrics) -> None:
        from .governor import Reason

        r, lb = base.registry, BASE_LABELS
        self._labels = dict(base._labels)
        self._denials = Counter(
            _counter_name(GOVERNOR_DENIALS), "Pre-trade governor limit actions (denials and clips) by reason",
            lb + ("reason",), registry=r,
        )
        self._breaches = Counter(
            _counter_name(HARD_LIMIT_BREACHES), "Executions that broke a hard limit (must stay 0)", lb, registry=r
        )
        self._halts = Counter(
            _counter_name(GOVERNOR_HALTS), "Entries of the governor into HALTED, by cause", lb + ("reason",), registry=r,
        )
        self._seen_halts: dict[str, int] = {}
        self._state = Gauge(TRADING_STATE, "Governor trading state: 0 ACTIVE, 1 REDUCING, 2 HALTED", lb, registry=r)
        self._turnover = Gauge(DAILY_TURNOVER, "Notional traded in the current trading day (USD)", lb, registry=r)
        self._refused = Counter(
            _counter_name(BARS_REFUSED), "Bars refused before they moved any state, by reason", lb + ("reason",),
            registry=r,
        )
        lab = self._labels
        from .barcheck import REASONS

        for reason in REASONS:
            self._refused.labels(reason=reason, **lab)
        self._seen_refused: dict[str, int] = {}
        self._reasons = tuple(x.value for x in Reason)
        for reason in self._reasons:
            self._denials.labels(reason=reason, **lab)
        self._breaches.labels(**lab)
        self._state.labels(**lab).set(0)
        self._turnover.labels(**lab).set(0)
        self._seen: dict[str, int] = {}
        self._seen_breaches = 0

    def observe(self, stats: EngineStats) -> None:
        """Advance the counters by the stats' deltas, set the gauges."""
        lab = self._labels
        for reason, n in stats.governor_denials.items():
            seen = self._seen.get(reason, 0)
            if n > seen:
                self._denials.labels(reason=reason, **lab).inc(n - seen)
                self._seen[reason] = n
        if stats.hard_limit_breaches > self._seen_breaches:
            self._breaches.labels(**lab).inc(stats.hard_limit_breaches - self._seen_breaches)
            self._seen_breaches = stats.hard_limit_breaches
        for reason, n in stats.governor_halts.items():
            seen = self._seen_halts.get(reason, 0)
            if n > seen:
                self._halts.labels(reason=reason, **lab).inc(n - seen)
                self._seen_halts[reason] = n
        self._state.labels(**lab).set(stats.trading_state)
        self._turnover.labels(**lab).set(stats.daily_turnover_usd)
        for reason, n in stats.bars_refused.items():
            seen = self._seen_refused.get(reason, 0)
            if n > seen:
                self._refused.labels(reason=reason, **lab).inc(n - seen)
                self._seen_refused[reason] = n
