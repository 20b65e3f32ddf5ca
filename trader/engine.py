"""Trading engine: bars -> features -> model -> decision -> governor -> broker -> books.

The decision core is free of I/O: :meth:`Engine.on_bar` takes a bar and
returns a :class:`StepResult`; the server exports metrics from it and from
:meth:`Engine.stats`, the backtest prints them.

Timing. A decision is taken on bar t's close and filled at bar t+1's open:

1. on bar t+1, the pending order is submitted to the live broker as an
   :class:`~.broker.Order` (``closing=True`` for end-of-day / halt flattening)
   through the :class:`~.broker.Broker` interface and filled against the bar
   with the broker's ``on_bar(open, volume, symbol=, ts=)`` (SimBroker: random
   slippage, may fill partially); what is still working after that bar is
   cancelled (one-bar immediate-or-cancel, whatever the broker's ``remainder``
   setting), so the engine never leaves an order working at the broker between
   bars. The executions and the order's final :class:`~.broker.OrderUpdate`
   (FILLED, CANCELLED after a partial fill or none, REJECTED with the broker's
   reason, e.g. a chaos reject) are booked as one :class:`~.broker.Fill`. For the
   same decision the simulated book fills by the model (modelled slippage,
   always fully filled, same open);
2. the previous bar's directional call is scored (precision);
3. both books are marked at bar t+1's close; equity = capital + live P&L;
4. features -> P(up) -> signal -> target position -> governor -> next order.

Decision rule: long if P(up) > 0.5 + threshold, short if P(up) < 0.5 -
threshold, else hold the current position. A new position is sized by ATR
(:mod:`.sizing`, capped at max_position_usd; whole shares); an existing
position on the signalled side is kept as is (no resizing churn).

Risk (:mod:`.governor`): every target goes through :class:`~.governor.Governor`
(marked with the bar's close, equity and day P&L first). While HALTED
(daily loss hard stop, drawdown halt, manual halt) an open position is
flattened; a new position is asked for and denied (counted).

Bars are checked first (:mod:`.barcheck`): an invalid, duplicate, out-of-order or
jumping print is refused with its reason before it moves anything (day, marks,
features, sizing); a working closing order stays working for the next valid bar.

End of day (:mod:`.session`, the symbol's exchange calendar, ``EngineConfig.calendar``:
XNYS by default): an order decided on bar t fills at bar
t+1's open (bar.ts + one bar, ``EngineConfig.bar_seconds``); when that fill time is outside
``[session open, close - flatten_before_close_s)`` (300 s: flat from 15:55 New
York, 12:55 on early closes) or on a non-session, the target is flat and the
order is a closing order, so nothing is held overnight and nothing is traded
on holidays. When no bar comes, the runtime's wall-clock duties
(:meth:`~.server.Runtime.tick`) flatten through :meth:`Engine.flatten_now`.

Daily bars (``bar_seconds == 86400``, :data:`~.session.DAILY_BAR_SECONDS`: one bar per
session of the symbol's calendar, stamped at the session open): a decision on a daily bar's close fills at the NEXT
session's open (:func:`~.session.fill_time`: Friday -> Monday, over holidays), so the fill
time is always a session open and there is no end-of-day flatten (positions are held across
sessions, :attr:`Engine.holds_overnight`); the trading day (governor, day P&L, daily loss
and turnover) is the bar's session date; the price time of the bar (staleness) is its
session's close (:func:`~.session.price_time`). Every per-bar figure scales with the bar
interval: ATR over ``period`` bars (days), impact per session (:class:`~.broker.CausalImpact`),
the jump bound (:func:`~.barcheck.max_jump_ratio_for`).

Orders: every decision gets a deterministic id (``{symbol}-{decision bar}-{sequence}``)
when it is taken; the runtime writes it ahead before the broker sees it, and after a
restart :meth:`Engine.recover_intent` and :meth:`Engine.reconcile` make sure it is never
sent twice (nor lost when the broker of record never saw it) and that the book agrees with
the broker before trading.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Protocol

import numpy as np

from . import governor as gov
from . import session as sess
from .barcheck import DEFAULT_MAX_JUMP_RATIO, INVALID_PRICE, BarCheck, max_jump_ratio_for
from .barcheck import REFERENCE_BARS as REFERENCE_TAIL
from .broker import Broker, Execution, Fill, ImpactModel, Order, OrderUpdate, modeled_fill
from .features import FeatureStream
from .marketdata import Bar
from .sizing import AtrSizer, AtrState, SizingConfig
from .evidence import EvidenceConfig, EvidenceStreams

#: default length of one bar (EngineConfig.bar_seconds): a decision on bar t's close fills at
#: bar t+1's open, this much later
BAR_INTERVAL = timedelta(minutes=1)
DEFAULT_BAR_SECONDS = 60
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_INF = math.inf

#: marker for :meth:`Engine.step`: compute P(up) from the feature stream and the model
_FROM_MODEL = object()

#: default probability edge for an entry (go long above 0.5 + t, short below 0.5 - t)
DEFAULT_ENTRY_THRESHOLD = 0.03
#: default max position as a fraction of allocated capital
DEFAULT_POSITION_FRACTION = 0.5
#: default max order as a fraction of capital (a full flip is 2 x position)
DEFAULT_ORDER_FRACTION = 1.0
#: default daily loss cap as a fraction of capital
DEFAULT_DAILY_LOSS_FRACTION = 0.02


def signal_of(p_up, threshold: float):
    """The decision rule's call: +1 if P(up) > 0.5 + threshold, -1 if P(up) < 0.5 - threshold,
    else 0 (NaN: 0). ``p_up``: a float (returns an int) or a numpy array (elementwise ints)."""
    return (p_up > 0.5 + threshold) * 1 - (p_up < 0.5 - threshold) * 1


class BarBroker(Broker, Protocol):
    """A :class:`~.broker.Broker` that fills its working orders bar by bar (SimBroker,
    :class:`~.broker.FillBroker`). ``paper`` (optional attribute): fills are paper."""

    def on_bar(
        self, bar_open: float, bar_volume: float, *, symbol: str | None = None, ts: datetime | None = None
    ) -> list[Execution]:
        """Fill working orders of ``symbol`` against a bar: open USD/share, volume shares, ts UTC."""
        ...


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
    target is flat (default 300: 15:55 New York on XNYS; 0 disables the flatten, not the
    no-trading-on-non-sessions rule). sizing: ATR sizing (None: size to
    max_position_usd). flatten_on_halt: close an open position when the
    governor is HALTED. Limits left unset are derived from capital_usd
    (:meth:`~.governor.RiskLimits.resolved`). bar_seconds: length of one bar, seconds
    (60: minute bars); the fill time of a decision (bar start + 2 bars - 1 bar = next
    open), the price time and every per-bar figure derive from it; 86400 means daily bars
    (one per session, see the module docstring). max_bar_jump_ratio: a bar whose open
    or close is further than this from the median of the last accepted closes is refused
    (:mod:`.barcheck`); None (default): the bound for the bar interval
    (:func:`~.barcheck.max_jump_ratio_for`: 10 % intraday, 50 % daily). evidence: the
    thresholds of the per-observation evidence streams (:mod:`.evidence`). calendar: the
    exchange_calendars name of the symbol's exchange (:data:`~.session.SUPPORTED_CALENDARS`,
    default XNYS); its sessions, early closes and time zone drive the end-of-day rule, the
    trading date and the daily bars' times. Raises ValueError (:class:`~.session.UnknownCalendar`)
    for an unsupported calendar."""

    capital_usd: float
    limits: gov.RiskLimits
    entry_threshold: float = DEFAULT_ENTRY_THRESHOLD
    paper: bool = False
    symbol: str = "AAPL"
    flatten_before_close_s: float = sess.FLATTEN_LEAD_S
    sizing: SizingConfig | None = field(default_factory=SizingConfig)
    flatten_on_halt: bool = True
    bar_seconds: int = DEFAULT_BAR_SECONDS
    max_bar_jump_ratio: float | None = None
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    calendar: str = sess.CALENDAR_NAME

    def __post_init__(self) -> None:
        sess.calendar(self.calendar)  # raises UnknownCalendar (a ValueError) naming the supported ones
        if not (isinstance(self.bar_seconds, int) and 0 < self.bar_seconds <= 86_400):
            raise ValueError(f"bar_seconds must be a whole number of seconds in (0, 86400], got {self.bar_seconds!r}")
        if self.max_bar_jump_ratio is None:
            object.__setattr__(self, "max_bar_jump_ratio", max_jump_ratio_for(self.bar_seconds))
        if not (0.0 < self.max_bar_jump_ratio < _INF):
            raise ValueError(f"max_bar_jump_ratio must be > 0, got {self.max_bar_jump_ratio!r}")

    @property
    def bar_interval(self) -> timedelta:
        """Length of one bar (daily bars: 1 day, but their fill and price times come from the
        calendar, :func:`~.session.fill_time`)."""
        return timedelta(seconds=self.bar_seconds)

    @property
    def daily(self) -> bool:
        """True for daily bars (``bar_seconds == 86400``: one bar per session of the calendar)."""
        return sess.is_daily(self.bar_seconds)

    @staticmethod
    def for_capital(capital_usd: float, **kw) -> "EngineConfig":
        """Config with default limits derived from ``capital_usd`` (see module constants), the collar and
        the price age scaled to ``kw``'s ``bar_seconds`` (:func:`~.governor.bar_length_defaults`)."""
        limits = gov.RiskLimits(
            max_order_usd=DEFAULT_ORDER_FRACTION * capital_usd,
            max_position_usd=DEFAULT_POSITION_FRACTION * capital_usd,
            max_daily_loss_usd=DEFAULT_DAILY_LOSS_FRACTION * capital_usd,
            **gov.bar_length_defaults(kw.get("bar_seconds", 60)),
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
    closing: bool = False
    #: deterministic broker order id, fixed at the decision (the write-ahead intent carries it)
    order_id: str = ""


@dataclass
class StepResult:
    """What happened on one bar.

    p_up: model probability (None during warm-up). signal: +1/-1/0. target:
    position wanted after the governor (shares). order_qty: shares sent for
    the next open (0 = none). verdict: governor outcome (None if no order was
    wanted). fill / sim_fill: executions of the previous decision on this bar's
    open. latency_s: seconds from bar arrival to decision. closing: the order
    only closes (end of day, halt flatten, reduce-only). trading_state: the
    governor's state after this bar's mark (0 ACTIVE, 1 REDUCING, 2 HALTED).
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
    closing: bool = False
    trading_state: int = 0
    bar_refused: str = ""


@dataclass(frozen=True)
class BarRun:
    """Consecutive valid bars of one New York trading date, as arrays of shape (m,), for
    :meth:`Engine.advance_quiet`. ts_ns: bar start, int64 ns since the epoch (UTC).
    high / low / close: USD. signal: the model's call per bar (+1 / -1 / 0, 0 in the
    feature warm-up). phase: :meth:`~.session.SessionClock.phase` of the bar's fill
    time (:func:`~.session.fill_time`: ts + 1 bar intraday, the next session's open for
    daily bars). session_open_ns: open of the fill time's session, int64 ns
    (:data:`~.sizing.NO_SESSION` on a non-session). price_ns: the bar's close time
    (:func:`~.session.price_time`), int64 ns. volume: shares per bar."""

    ts_ns: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    signal: np.ndarray
    phase: np.ndarray
    session_open_ns: np.ndarray
    price_ns: np.ndarray
    volume: np.ndarray

    def head(self, k: int) -> "BarRun":
        """The first ``k`` bars."""
        return BarRun(*(getattr(self, f)[:k] for f in self.__dataclass_fields__))


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
    governor_denials: dict[str, int] = field(default_factory=dict)
    hard_limit_breaches: int = 0
    #: entries into HALTED by cause (``GovernorState.halts``)
    governor_halts: dict[str, int] = field(default_factory=dict)
    trading_state: int = 0
    daily_turnover_usd: float = 0.0
    bars_refused: dict[str, int] = field(default_factory=dict)
    #: criterion -> sums of its evidence stream (:mod:`.evidence`)
    evidence: dict = field(default_factory=dict)
    #: a several-symbol trader (:class:`~.portfolio.Portfolio`): symbol -> position_qty (shares),
    #: position_notional_usd and pnl_usd (USD), trades; empty for one symbol
    by_symbol: dict[str, dict] = field(default_factory=dict)


@dataclass
class Engine:
    """Runs one strategy role on a stream of bars (see module docstring)."""

    config: EngineConfig
    model: ProbabilityModel
    broker: BarBroker
    impact: ImpactModel
    clock: Callable[[], float] = time.perf_counter
    features: FeatureStream = field(default_factory=FeatureStream)
    #: the champion's model, run on the same feature rows for paired evidence only (never trades)
    reference: ProbabilityModel | None = None
    #: the book the governor's loss and drawdown limits see, as (equity USD, day P&L USD); None: this
    #: engine's own. A :class:`~.portfolio.Portfolio` of several symbols sets it to the sum over its
    #: engines, so one governor (shared) enforces one combined loss cap across the symbols
    totals: Callable[[], tuple[float, float]] | None = None

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
        #: signed shares of this symbol's orders still working at an asynchronous broker of record (IB)
        #: and not booked here: set by the runtime (:mod:`.liveorders`) before each step; the decision
        #: and the governor count them as position (never traded against, never doubled)
        self.broker_working_qty = 0
        self._adopt_shares = 0
        self._order_seq = 0
        self.reconciled_shares = 0
        self._prev_close: float | None = None
        self._prev_signal = 0
        self._prev_ref_signal = 0
        self._day: date | None = None
        self._day_start_pnl = 0.0
        self.max_drawdown = 0.0
        self._sim_peak = self.config.capital_usd
        self.sim_max_drawdown = 0.0
        self._flatten_cache: tuple[date, datetime] | None = None
        # governor, sizing, end of day; governor_state / sizing_state are the dataclasses
        # that snapshot()/restore() carry (to_dict/from_dict); _sync() re-binds them after a restore
        self.limits = self.config.limits.resolved(self.config.capital_usd)
        self.governor_state = gov.GovernorState()
        self.governor = gov.Governor(self.limits, self.governor_state)
        self.sizing_state = AtrState()
        self.sizer = AtrSizer(self.config.sizing, self.sizing_state) if self.config.sizing else None
        self.calendar = sess.calendar(self.config.calendar)
        self.sessions = sess.SessionClock(self.config.flatten_before_close_s, self.calendar)
        self._days = sess.SessionClock(cal=self.calendar)  # local date of bar times (the sessions clock caches fill times)
        self._market_ns = 0
        self._day_iso: tuple[date | None, str] = (None, "")
        self.bar_check = BarCheck(self.config.max_bar_jump_ratio)
        self._impact_update = getattr(self.impact, "update", None)
        self._bar = self.config.bar_interval
        self._daily = self.config.daily
        self.evidence = EvidenceStreams()

    @property
    def holds_overnight(self) -> bool:
        """True if positions are held across sessions (daily bars): no end-of-day flatten, and
        a runtime's wall-clock end-of-day duty must not flatten either."""
        return self._daily

    # -- evidence -----------------------------------------------------------------
    @property
    def peak_equity(self) -> float:
        """Peak of live equity, USD. One peak, owned by the governor (``GovernorState.peak_equity_usd``):
        the drawdown the metrics report is the one the limits act on (review D11)."""
        return self.governor_state.peak_equity_usd

    def rebase_capital(self, delta_usd: float) -> None:
        """The stage's capital changed by ``delta_usd`` (USD) since the state was saved: move the
        equity peaks (live, in the governor, and simulated) by the same amount, so the USD
        drawdown is unchanged (a cut does not halt the pod, a raise does not erase a drawdown)."""
        self._sync()
        self.governor.rebase_capital(delta_usd)
        self._sim_peak += delta_usd

    def reallocate(self, capital_usd: float, limits: gov.RiskLimits) -> None:
        """Apply a new allocation in place (the champion's capital at a stage transition,
        :mod:`trader.allocation`): capital (USD) and governor limits (unset ones derived from
        the new capital); the equity peaks move by the change in USD, as :meth:`rebase_capital`
        does on a restart. Positions over a lowered limit may only be reduced from here on (the
        governor's rules). Raises ``ValueError`` on a capital that is not positive and finite."""
        resolved = limits.resolved(capital_usd)
        delta = capital_usd - self.config.capital_usd
        self.config = replace(self.config, capital_usd=capital_usd, limits=limits)
        self.limits = resolved
        self.rebase_capital(delta)  # its _sync() rebuilds the governor on the new limits

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

    @property
    def day(self) -> date | None:
        """The New York trading date of the last bar booked (None before the first)."""
        return self._day

    def _governed(self) -> tuple[float, float]:
        """(equity USD, day P&L USD) as the governor's limits see them: :attr:`totals`, or this engine's."""
        return self.totals() if self.totals is not None else (self.equity, self.day_pnl())

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
            governor_denials={k: v for k, v in self.governor.denials.items() if v},
            hard_limit_breaches=self.governor.hard_limit_breaches,
            governor_halts=dict(self.governor_state.halts),
            trading_state=self.governor_state.trading_state,
            daily_turnover_usd=self.governor_state.turnover_usd,
            bars_refused={k: v for k, v in self.bar_check.refused.items() if v},
            evidence=dict(self.evidence.sums),
        )

    # -- durable state and out-of-band order control (trader/state.py, killswitch.py) ------
    #: attributes never captured by the generic "state object with to_dict/from_dict" rule
    _SNAPSHOT_SKIP = ("config", "model", "broker", "impact", "clock", "session_close", "features", "live", "sim", "reference",
                      "totals")

    def snapshot(self) -> dict:
        """Everything needed to resume exactly, as JSON-able builtins (floats kept exact).

        Books, counters, the working order (the pending decision, with its closing flag:
        it reaches the broker only on the next bar, and nothing is left working at the
        broker after a bar, so the broker holds no working-order state to carry), day and
        peak bookkeeping, the feature window, every dataclass attribute offering
        ``to_dict``/``from_dict`` (the governor state: turnover, throttle window, trading
        state), the SimBroker's RNG states (slippage and chaos rejects) and its
        month-to-date shares (IBKR tiered commissions: the tier survives a restart).
        """

        def book(b: Book) -> dict:
            return {"position": b.position, "cash": b.cash, "fees": b.fees, "mark": b.mark}

        p = self._pending
        extra = {
            name: v.to_dict()
            for name, v in vars(self).items()
            if name not in self._SNAPSHOT_SKIP and hasattr(v, "__dataclass_fields__")
            and hasattr(v, "to_dict") and hasattr(type(v), "from_dict")
        }
        rng = getattr(self.broker, "_rng", None)
        chaos = getattr(self.broker, "_chaos_rng", None)
        return {
            "live": book(self.live),
            "sim": book(self.sim),
            "bars": self.bars,
            "trades": self.trades,
            "orders": dict(self.orders),
            "ordered": self._ordered,
            "filled": self._filled,
            "slip_real": self._slip_real,
            "slip_model": self._slip_model,
            "slip_shares": self._slip_shares,
            "calls": self.calls,
            "correct": self.correct,
            "pending": None if p is None else {
                "target": p.target, "live_qty": p.live_qty, "decided_at": p.decided_at.isoformat(),
                "closing": p.closing, "order_id": p.order_id,
            },
            "order_seq": self._order_seq,
            "impact": self.impact.to_dict() if hasattr(self.impact, "to_dict") else None,
            "reconciled_shares": self.reconciled_shares,
            "prev_close": self._prev_close,
            "prev_signal": self._prev_signal,
            "prev_ref_signal": self._prev_ref_signal,
            "day": None if self._day is None else self._day.isoformat(),
            "day_start_pnl": self._day_start_pnl,
            "peak_equity": self.peak_equity,
            "max_drawdown": self.max_drawdown,
            "sim_peak": self._sim_peak,
            "sim_max_drawdown": self.sim_max_drawdown,
            "features": self.features.window(),
            "state": extra,
            "broker_rng": rng.bit_generator.state if isinstance(rng, np.random.Generator) else None,
            "broker_chaos_rng": chaos.bit_generator.state if isinstance(chaos, np.random.Generator) else None,
            "governor_counters": None if getattr(self, "governor", None) is None else {
                "denials": dict(self.governor.denials), "hard_limit_breaches": self.governor.hard_limit_breaches
            },
            "market_ns": getattr(self, "_market_ns", None),
            # IBKR tiered fees: the month and the shares the broker executed in it
            "broker_month": None if getattr(self.broker, "_month", None) is None else [
                *self.broker._month, self.broker._month_shares
            ],
        }

    def restore(self, snap: dict) -> None:
        """Resume from :meth:`snapshot` output (same config and model assumed)."""
        for b, d in ((self.live, snap["live"]), (self.sim, snap["sim"])):
            b.position, b.cash, b.fees, b.mark = int(d["position"]), d["cash"], d["fees"], d["mark"]
        self.bars, self.trades, self.orders = snap["bars"], snap["trades"], dict(snap["orders"])
        self._ordered, self._filled = snap["ordered"], snap["filled"]
        self._slip_real, self._slip_model, self._slip_shares = snap["slip_real"], snap["slip_model"], snap["slip_shares"]
        self.calls, self.correct = snap["calls"], snap["correct"]
        p = snap["pending"]
        self._order_seq = int(snap.get("order_seq", 0))
        if snap.get("impact") is not None and hasattr(self.impact, "load"):
            self.impact.load(snap["impact"])
        self.reconciled_shares = int(snap.get("reconciled_shares", 0))
        self._pending = None if p is None else _Pending(
            int(p["target"]), int(p["live_qty"]), datetime.fromisoformat(p["decided_at"]), bool(p.get("closing", False)),
            str(p.get("order_id") or f"{self.config.symbol}-{datetime.fromisoformat(p['decided_at']):%Y%m%dT%H%M%SZ}-r"),
        )
        self._prev_close, self._prev_signal = snap["prev_close"], snap["prev_signal"]
        self._prev_ref_signal = int(snap.get("prev_ref_signal", 0))
        self._day = None if snap["day"] is None else date.fromisoformat(snap["day"])
        self._day_start_pnl = snap["day_start_pnl"]
        self.max_drawdown = snap["max_drawdown"]  # the peak is the governor's, restored with its state
        self._sim_peak, self.sim_max_drawdown = snap["sim_peak"], snap["sim_max_drawdown"]
        f = snap["features"]
        self.features = self.features.refilled(f["high"], f["low"], f["close"], f["volume"])  # the model's spec
        for name, d in snap.get("state", {}).items():
            cur = getattr(self, name, None)
            if cur is not None and hasattr(type(cur), "from_dict"):
                setattr(self, name, type(cur).from_dict(d))
        rng = getattr(self.broker, "_rng", None)
        if snap.get("broker_rng") is not None and isinstance(rng, np.random.Generator):
            rng.bit_generator.state = snap["broker_rng"]
        chaos = getattr(self.broker, "_chaos_rng", None)
        if snap.get("broker_chaos_rng") is not None and isinstance(chaos, np.random.Generator):
            chaos.bit_generator.state = snap["broker_chaos_rng"]
        gc = snap.get("governor_counters")
        if gc is not None and getattr(self, "governor", None) is not None:
            self.governor.denials.update(gc["denials"])
            self.governor.hard_limit_breaches = gc["hard_limit_breaches"]
        if snap.get("market_ns") is not None:
            self._market_ns = snap["market_ns"]
        bm = snap.get("broker_month")
        if bm is not None and hasattr(self.broker, "_month_shares"):
            self.broker._month, self.broker._month_shares = (int(bm[0]), int(bm[1])), int(bm[2])

    def _new_pending(self, target: int, live_qty: int, ts: datetime, closing: bool) -> _Pending:
        """A decided order with its deterministic id ``{symbol}-{decision bar ts}-{sequence}``: the
        same decision restored after a restart has the same id (never a second id for one intent)."""
        self._order_seq += 1
        oid = f"{self.config.symbol}-{ts:%Y%m%dT%H%M%SZ}-{self._order_seq}"
        return _Pending(target, live_qty, ts, closing, oid)

    def next_order(self) -> Order | None:
        """The order the next bar will send to the broker (the working decision), or None: what the
        runtime writes ahead (durably) before the bar is processed (review D12)."""
        p = self._pending
        if p is None or not p.live_qty:
            return None
        return Order(p.order_id, self.config.symbol, int(p.live_qty), closing=p.closing)

    def recover_intent(self, order_id: str) -> str:
        """After a restart: the working order ``order_id`` was found written ahead, so it may have
        reached the broker before the crash. A broker of record (``system_of_record``) is asked:
        if it never saw the id, the order stays working and goes on the next bar with the same id
        ("resend": nothing lost); otherwise, and always with a local broker that has no memory of
        the run, it is dropped ("abandoned": never sent twice; :meth:`reconcile` takes what it
        did from the broker). "none": the working order is another one, or there is none."""
        p = self._pending
        if p is None or p.order_id != order_id:
            return "none"
        if getattr(self.broker, "system_of_record", False):
            try:
                self.broker.order(order_id)
            except KeyError:
                return "resend"
        self._pending = None
        return "abandoned"

    def reconcile(self) -> int:
        """Align the engine's live position with the broker before any trading after a restart
        (review D13); returns the signed shares booked to the engine (0 if they agreed).

        A broker that is the system of record (``system_of_record`` true: Interactive
        Brokers) wins: the difference is booked at the last mark (no commission known) and
        counted in ``reconciled_shares``. A local broker started fresh (SimBroker, FillBroker)
        has no memory of the run: it is seeded with the engine's positions instead.
        """
        sym = self.config.symbol
        mine = self.live.position
        if not getattr(self.broker, "system_of_record", False):
            seed = getattr(self.broker, "seed_positions", None)
            if seed is not None:
                seed({sym: mine} if mine else {})
            return 0
        theirs = int(self.broker.positions().get(sym, 0))
        diff = theirs - mine - self._adopt_shares  # (shares found before, to be booked at the first open)
        self.adopt_broker_shares(diff)
        return diff

    def adopt_broker_shares(self, diff: int) -> None:
        """Book ``diff`` signed shares the broker of record holds and no fill explains (a restart's
        reconcile, or a break IB reported after a reconnect mid-run) at the last mark, USD, counted
        in ``reconciled_shares``; before anything was marked (a fresh pod), at the first bar's open,
        before that bar's decision."""
        if not diff:
            return
        if math.isfinite(self.live.mark):
            self._adopt(diff, self.live.mark)
        else:
            self._adopt_shares += diff

    def _adopt(self, diff: int, price: float) -> None:
        """Book ``diff`` shares the broker of record holds and this book did not, at ``price`` (USD)."""
        self._sync()
        self.governor.on_fill(self.config.symbol, diff, price, self.live.position, diff)
        self.live.position += diff
        self.live.cash -= diff * price
        self.reconciled_shares += abs(diff)

    @property
    def working_qty(self) -> int:
        """Signed shares of the working live order (decided, to be filled at the next open); 0 if none."""
        return 0 if self._pending is None else self._pending.live_qty

    def resume(self, by: str, reason: str, at: str) -> dict:
        """Lift a governor halt by an explicit, recorded action (:meth:`~.governor.Governor.resume`);
        returns the record (who, why, when ISO, state before and after)."""
        self._sync()
        return self.governor.resume(by=by, reason=reason, at=at)

    def flatten_now(self, ts: datetime) -> StepResult | None:
        """Flatten the live position at once, without waiting for a bar (the wall-clock end of day
        or a silent feed, review D8); returns what happened, or None if flat.

        The order (closing, deterministic id) replaces any working one and goes to the broker
        now. A bar broker (SimBroker) fills it against a synthetic bar at the last mark (the last
        trade price is the best price known). The governor
        is not asked: the order only reduces risk (like :meth:`flatten_next`)."""
        qty = -self.live.position
        self._pending = None
        if qty == 0:
            return None
        self._pending = self._new_pending(0, qty, ts, True)
        return self.execute_working_now(ts)

    def execute_working_now(self, ts: datetime) -> StepResult | None:
        """Send the working order now (see :meth:`flatten_now`) and book it; None if nothing works."""
        if self._pending is None:
            return None
        mark = self.live.mark
        if not math.isfinite(mark):
            return None
        result = StepResult(ts=ts, closing=self._pending.closing)
        # volume: unknown without a bar; 100x the order (the broker's participation model fills it)
        vol = 100.0 * abs(self._pending.live_qty)
        self._execute_pending(Bar(ts, mark, mark, mark, mark, vol), result)
        self._mark(mark)
        self._sync()
        result.trading_state = self.governor.mark(self.config.symbol, self.live.position, mark, *self._governed())
        result.target = self.live.position
        return result

    @property
    def working_reduces_risk(self) -> bool:
        """True if the working order only reduces |position| toward flat (end of day, halt or
        kill flatten, reduce-only exit): the one kind a kill or a closed gate lets through."""
        p = self._pending
        return p is not None and p.closing and p.live_qty != 0

    def cancel_working(self) -> int:
        """Cancel the working order (kill switch, pause, state outage); returns its signed live shares.

        The simulated book drops the same decision, so live and simulated stay comparable.
        """
        qty = self.working_qty
        self._pending = None
        return qty

    def flatten_next(self, ts: datetime) -> int:
        """Replace any working order by one that flattens the live position at the next open; returns its shares.

        Risk-reducing by construction, so it is not sent through the governor's entry checks. At an
        asynchronous broker the shares of orders already booked that still work there (a closing
        order works on after its bar: ``booked_working_qty``) are flattened by them: the new order
        is sized without them, so they are never sold (or bought) twice.
        """
        self._pending = None
        at_broker = getattr(self.broker, "booked_working_qty", None)
        left = self.live.position + (int(at_broker(self.config.symbol)) if at_broker is not None else 0)
        if left == 0 and self.sim.position == 0:
            return 0
        self._pending = self._new_pending(0, -left, ts, True)
        return -left

    # -- the step -------------------------------------------------------------------
    def _sync(self) -> None:
        """Re-bind the governor to its state object and limits (replaced by restore() and
        reallocate()), and the sizer to its state object."""
        g = self.governor
        if g.state is not self.governor_state or g.limits is not self.limits:
            fresh = gov.Governor(self.limits, self.governor_state)
            fresh.denials, fresh.hard_limit_breaches = g.denials, g.hard_limit_breaches
            self.governor = fresh
        if self.sizer is not None and self.sizer.state is not self.sizing_state:
            self.sizer.state = self.sizing_state
        self.bar_check.max_jump_ratio = self.config.max_bar_jump_ratio

    def _entry_shares(self, price: float) -> int:
        """Size of a new position: the ATR risk budget, at most the stage's capital (x the
        capital fraction); without sizing, max_position_usd. The per-symbol position cap is the
        governor's (one owner: its ``max_position`` clip is what the certification tests)."""
        if self.sizer is None:
            return int(self.limits.max_position_usd // price)
        return self.sizer.shares(self.config.capital_usd, price, self.limits.capital_usd * self.limits.max_capital_fraction)

    def _execute_pending(self, bar: Bar, result: StepResult) -> None:
        p = self._pending
        self._pending = None
        if p is None:
            return
        if p.live_qty:
            result.fill = self._book_live(self._send(p, bar))
        sim_qty = p.target - self.sim.position
        if sim_qty:
            sf = modeled_fill(sim_qty, bar.open, self.impact, paper=self.config.paper,
                              fees=getattr(self.broker, "fee_schedule", None))
            result.sim_fill = sf
            self.sim.apply(sf)

    def _book_live(self, fill: Fill) -> Fill:
        """Book one order's outcome in the live book: counters, governor audit, slippage, evidence."""
        self.orders[fill.status] += 1
        self._ordered += abs(fill.ordered_qty)
        self._filled += abs(fill.filled_qty)
        if fill.filled_qty:
            self.trades += 1
            self.governor.on_fill(self.config.symbol, fill.filled_qty, fill.price, self.live.position, fill.ordered_qty)
            self.live.apply(fill)
            n = abs(fill.filled_qty)
            self._slip_real += fill.slippage_bps * n
            self._slip_model += fill.modeled_slippage_bps * n
            self._slip_shares += n
        self.evidence.on_fill(self.config.evidence, fill.ordered_qty, fill.filled_qty, fill.slippage_bps,
                              fill.modeled_slippage_bps)
        return fill

    def book_detached(self, order: Order, upd: OrderUpdate, execs: list[Execution], ref_price: float) -> Fill:
        """Book the outcome of ``order``, which reached an asynchronous broker and then left this
        engine's hands before its bar (withheld by a kill or an outage, replaced by a flatten):
        ``upd`` its final state, ``execs`` its executions (signed shares, USD), ``ref_price`` the
        arrival price (USD). Counted like any order (fill ratio, slippage, governor audit)."""
        self._sync()
        return self._book_live(self._as_fill(order, upd, execs, ref_price))

    def book_late_fill(self, execs: list[Execution]) -> int:
        """Book executions that arrived after their order was booked (a cancel raced a fill at the
        broker): shares and cash at their prices, today's turnover, the governor's audit; the
        order's fill ratio counts them. Returns the signed shares booked."""
        self._sync()
        total = 0
        for e in execs:
            self.governor.on_fill(self.config.symbol, e.qty, e.price, self.live.position, e.qty)
            self.live.position += e.qty
            self.live.cash -= e.qty * e.price + e.commission_usd
            self.live.fees += e.commission_usd
            self._filled += abs(e.qty)
            total += e.qty
        return total

    def book_fees(self, usd: float) -> None:
        """Book fees reported after their order was booked (IB's commission reports come apart
        from the executions), USD."""
        self.live.cash -= usd
        self.live.fees += usd

    def _send(self, p: _Pending, bar: Bar) -> Fill:
        """Submit the pending decision as an Order, fill it against ``bar`` (``on_bar``),
        cancel what is left, and return the outcome as one :class:`~.broker.Fill`.

        Status: ``filled`` (all shares), ``partial`` (some, rest cancelled), ``rejected``
        (none: REJECTED at submit or fill, or cancelled unfilled, with the broker's reason).
        With one execution (SimBroker: always, one order per bar) price and slippage are
        that execution's; with several, share-weighted averages (USD/share, bps).
        Commission: the order's total (USD).
        """
        sym = self.config.symbol
        order = Order(p.order_id, sym, int(p.live_qty), closing=p.closing)
        upd = self.broker.submit(order)
        execs: list[Execution] = []
        # (an asynchronous broker's order sent at its decision may be done already: filled, or
        # cancelled after a partial fill)
        if upd.state.working or upd.filled_qty:
            done = self.broker.on_bar(bar.open, bar.volume, symbol=sym, ts=bar.ts)
            execs = [e for e in done if e.order_id == order.order_id]
            upd = self.broker.order(order.order_id)
            if upd.state.working:
                upd = self.broker.cancel(order.order_id)  # one bar only (immediate-or-cancel)
        return self._as_fill(order, upd, execs, bar.open)

    def _as_fill(self, order: Order, upd: OrderUpdate, execs: list[Execution], bar_open: float) -> Fill:
        paper = bool(getattr(self.broker, "paper", self.config.paper))
        filled = sum(e.qty for e in execs)
        if filled == 0:
            return Fill(order.qty, 0, bar_open, bar_open, 0.0, 0.0, 0.0, paper, "rejected", upd.reason)
        if len(execs) == 1:
            e = execs[0]
            price, slip, modeled = e.price, e.slippage_bps, e.modeled_slippage_bps
        else:
            n = abs(filled)
            price = sum(abs(e.qty) * e.price for e in execs) / n
            slip = sum(abs(e.qty) * e.slippage_bps for e in execs) / n
            modeled = sum(abs(e.qty) * e.modeled_slippage_bps for e in execs) / n
        partial = filled != order.qty
        return Fill(
            ordered_qty=order.qty,
            filled_qty=filled,
            ref_price=bar_open,
            price=price,
            slippage_bps=slip,
            modeled_slippage_bps=modeled,
            commission_usd=upd.commission_usd,
            paper=paper,
            status="partial" if partial else "filled",
            reason=upd.reason if partial else "",
        )

    def _mark(self, close: float) -> None:
        """Mark both books at ``close``; update peaks and max drawdowns (as :attr:`equity` / :attr:`drawdown`)."""
        live, sim = self.live, self.sim
        live.mark = sim.mark = close
        capital = self.config.capital_usd
        eq = capital + (live.cash + live.position * close if live.position else live.cash)
        peak = self.governor_state.peak_equity_usd  # the governor raises it in its own mark
        if eq > peak:
            peak = eq
        dd = max(0.0, (peak - eq) / peak) if peak > 0 else 1.0
        if dd > self.max_drawdown:
            self.max_drawdown = dd
        seq = capital + (sim.cash + sim.position * close if sim.position else sim.cash)
        speak = self._sim_peak
        if seq > speak:
            self._sim_peak = speak = seq
        if speak > 0:
            sdd = (speak - seq) / speak
            if sdd > self.sim_max_drawdown:
                self.sim_max_drawdown = sdd

    def _score_previous_call(self, close: float) -> None:
        if self._prev_signal and self._prev_close is not None:
            move = close - self._prev_close
            if move != 0:  # unchanged closes neither confirm nor refute a call
                self.calls += 1
                right = (move > 0) == (self._prev_signal > 0)
                if right:
                    self.correct += 1
                if self._prev_ref_signal:  # both models called this bar: a paired observation
                    self.evidence.on_paired_call(self.config.evidence, right, (move > 0) == (self._prev_ref_signal > 0))

    @staticmethod
    def wants_order(signal, phase, position: int):
        """Whether a bar with this signal (+1/-1/0) and fill phase (1/0/-1) may move the
        target off ``position`` (shares; only its sign matters): holding into a flat
        window, a signal against the position, or any signal from flat (the size may
        still come out 0). Works on ints or on equal-shape numpy arrays (elementwise)."""
        return ((phase > 0) & (signal != 0) & (signal * position <= 0)) | ((phase <= 0) & (position != 0))

    def advance_quiet(self, run: BarRun) -> int:
        """Process the leading bars of ``run`` on which this engine only marks its books; return how many.

        A bar is *quiet* when nothing is working (no pending order) and the target
        equals the position: :meth:`wants_order` is false (the caller checks it for
        every bar of ``run``, see Preconditions) and the governor does not go HALTED
        while a position is held (that flattens it). On such a bar :meth:`step` only
        counts the bar, marks the governor, scores the previous call, marks both books
        and feeds the ATR sizer: this calls the same methods (``Governor.mark``,
        :meth:`_score_previous_call`, :meth:`_mark`, ``AtrSizer.update_run``) without
        the rest of the step (bar and result objects, calendar, broker, governor
        check). The first bar that is not quiet is left for :meth:`step`; it has been
        marked on the governor already, and marking it again with the same figures
        changes nothing. A test replays real bars both ways and compares every figure.

        Preconditions: ``run`` continues the last bar given to :meth:`step` (same New
        York trading date, valid prices) and ``wants_order(run.signal, run.phase,
        position)`` is false on all of it. The feature stream is not advanced.

        Daily bars: every bar is a new trading date, so no run continues the last bar's
        date and :mod:`.replay` never calls this for them (each goes through :meth:`step`);
        ``run.price_ns`` is then the session close (:func:`~.session.bar_times_ns`).
        """
        if self._pending is not None or len(run.close) == 0 or self.totals is not None:
            return 0  # (a portfolio's governor sees the other symbols' books too: bar by bar only)
        self._sync()
        pos = self.live.position
        flattens_on_halt = pos != 0 and self.config.flatten_on_halt
        if flattens_on_halt and self.governor_state.trading_state == gov.HALTED:
            return 0
        gmark, score, mark = self.governor.mark, self._score_previous_call, self._mark
        sym, capital, cash, day0 = self.config.symbol, self.config.capital_usd, self.live.cash, self._day_start_pnl
        k = 0
        for c, sig in zip(run.close.tolist(), run.signal.tolist()):
            pnl = cash + pos * c if pos else cash  # live P&L once marked at c (Book.pnl)
            if gmark(sym, pos, c, capital + pnl, pnl - day0) == gov.HALTED and flattens_on_halt:
                break
            score(c)
            mark(c)
            self._prev_signal, self._prev_close = sig, c
            self._prev_ref_signal = 0  # the batch path has no reference model: the next call is unpaired
            k += 1
        if k:
            run = run.head(k)
            self.bar_check.accept_run(run.ts_ns[-REFERENCE_TAIL:].tolist(), run.close[-REFERENCE_TAIL:].tolist())
            upd = getattr(self.impact, "update_run", None)
            if upd is not None:
                upd(run.ts_ns.tolist(), run.close.tolist(), run.volume.tolist())
            if self.sizer is not None:
                self.sizer.update_run(run.ts_ns, run.high, run.low, run.close, run.session_open_ns)
            self._market_ns = max(self._market_ns, int(run.price_ns[-1]))
            self.bars += k
            self.evidence.on_bars(self.config.evidence, self.bars, self.live, self.sim, capital)
        return k

    def prime(self, bar: Bar) -> bool:
        """Feed a bar of history to a live engine (warm-up): the bar check's reference, the feature
        window, the ATR sizer, the impact model, market time and the marks of both books move as on
        :meth:`step`; nothing is decided, ordered, scored or counted (no bar, no evidence, no
        governor check). A live pod primes with the bars it did not see before trading the next
        one (a fresh start, or the bars missed while it was down). Returns False for a bar the
        check refuses (it moves nothing)."""
        self._sync()
        bar_ns = (bar.ts - _EPOCH) // _ONE_US * 1000
        if self.bar_check.check(bar_ns, bar.open, bar.high, bar.low, bar.close, bar.volume):
            return False
        price_ns = (self.calendar.price_time(bar.ts, self.config.bar_seconds) - _EPOCH) // _ONE_US * 1000
        self._market_ns = max(self._market_ns, price_ns)
        if self._impact_update is not None:
            self._impact_update(bar_ns, bar.close, bar.volume)
        if self.sizer is not None:
            session = self.sessions.session(self.calendar.fill_time(bar.ts, self.config.bar_seconds))
            self.sizer.update(bar.ts, bar.high, bar.low, bar.close,
                              None if session is None or self._daily else session.open)
        self.features.update(bar.high, bar.low, bar.close, bar.volume)
        self._mark(bar.close)
        self._prev_close = bar.close
        self._prev_signal = self._prev_ref_signal = 0  # no call was made: nothing to score next
        return True

    def _refuse_bar(self, reason: str, result: StepResult, t0: float) -> StepResult:
        """A refused bar (:mod:`.barcheck`): no fill on it, no mark, no decision. A working
        risk-adding order is cancelled (its decision is now a bar older); a closing order
        (end of day, halt flatten, reduce-only exit) stays working for the next valid bar."""
        p = self._pending
        cancelled = p is not None and p.live_qty != 0 and not p.closing
        if cancelled:
            self.orders["rejected"] += 1
            self._ordered += abs(p.live_qty)
            self._pending = None
        if p is not None and not p.live_qty:
            self._pending = None
        if reason == INVALID_PRICE and cancelled:
            self.governor.denials[gov.Reason.INVALID_PRICE.value] += 1
        self._prev_signal = self._prev_ref_signal = 0
        state = self.governor_state.trading_state
        if reason == INVALID_PRICE:
            result.verdict = gov.Verdict(0, (gov.Reason.INVALID_PRICE,), cancelled, False, state)
        result.bar_refused = reason
        result.trading_state = state
        result.latency_s = self.clock() - t0
        return result

    def on_bar(self, bar: Bar) -> StepResult:
        """Process one bar (see module docstring) and return what happened."""
        return self.step(bar, _FROM_MODEL)

    def step(self, bar: Bar, p_up: "float | None | object" = None) -> StepResult:
        """Process one bar with the model's output given (see module docstring).

        ``p_up``: P(up) for this bar's feature row, or None in the feature warm-up.
        :meth:`on_bar` computes it from the feature stream and the model; a batch
        replay (:mod:`.replay`) passes the value it computed for the whole series,
        and this engine's feature stream is then not advanced (the replay primes it
        when it is done).
        """
        t0 = self.clock()
        result = StepResult(ts=bar.ts)
        self.bars += 1
        self._sync()
        # validate first: a refused bar moves nothing (day, marks, features, sizing, market time)
        bar_ns = (bar.ts - _EPOCH) // _ONE_US * 1000
        refused = self.bar_check.check(bar_ns, bar.open, bar.high, bar.low, bar.close, bar.volume)
        if refused:
            return self._refuse_bar(refused, result, t0)

        # market time: the newest bar close seen; a bar older than that by more than the
        # governor's max price age is stale
        if self._daily:  # the session's close; the fill at the next session's open
            price_ns = (self.calendar.price_time(bar.ts, self.config.bar_seconds) - _EPOCH) // _ONE_US * 1000
            fill_ts = self.calendar.fill_time(bar.ts, self.config.bar_seconds)
        else:
            price_ns = (bar.ts + self._bar - _EPOCH) // _ONE_US * 1000
            fill_ts = bar.ts + self._bar  # the decision is taken at this bar's close, filled at the next open
        if price_ns > self._market_ns:
            self._market_ns = price_ns
        day = self._days.day(bar.ts)
        if day != self._day:
            self._day = day
            self._day_start_pnl = self.live.pnl()
        if self._day_iso[0] != day:
            self._day_iso = (day, day.isoformat())
        self.governor.new_day(self._day_iso[1])

        if self._adopt_shares:  # the broker's position found at start-up, before anything was marked
            self._adopt(self._adopt_shares, bar.open)
            self._adopt_shares = 0
        self._execute_pending(bar, result)
        if self._impact_update is not None:  # causal costs: this bar counts from the next fill on
            self._impact_update(bar_ns, bar.close, bar.volume)
        self._score_previous_call(bar.close)
        self._mark(bar.close)
        pos = self.live.position
        state = self.governor.mark(self.config.symbol, pos, bar.close, *self._governed())
        result.trading_state = state
        session = self.sessions.session(fill_ts)
        if self.sizer is not None:
            # daily bars: no session open for the sizer (one bar per session: no intraday ATR)
            self.sizer.update(bar.ts, bar.high, bar.low, bar.close,
                              None if session is None or self._daily else session.open)

        ref_signal = 0
        if p_up is _FROM_MODEL:
            x = self.features.update(bar.high, bar.low, bar.close, bar.volume)
            p_up = None if x is None else float(self.model.p_up_one(x))
            if x is not None and self.reference is not None:
                ref_signal = signal_of(float(self.reference.p_up_one(x)), self.config.entry_threshold)
        signal = 0
        # shares still working at an asynchronous broker count as position (the runtime cancels them
        # and books what fills): the decision and the governor's caps see pos + working
        working = self.broker_working_qty
        pos += working
        target = pos
        if p_up is not None:
            p = result.p_up = p_up
            signal = signal_of(p, self.config.entry_threshold)
            if signal and pos * signal <= 0:
                target = signal * self._entry_shares(bar.close)
        if self.sessions.phase(fill_ts) <= 0:
            target = 0  # end of day (close - 5 min), before the open, or a non-session: flat
            # (daily bars fill at a session open: phase 1 unless beyond the calendar)
        elif state == gov.HALTED and pos != 0 and self.config.flatten_on_halt:
            target = 0
        if working and (target - pos) * working < 0:
            target = pos  # never against our own working order: it is being cancelled, decide after
        result.signal = signal
        self._prev_signal = signal
        self._prev_ref_signal = ref_signal
        last_close = self._prev_close
        self._prev_close = bar.close

        if target != pos:
            verdict = self.governor.check(
                self.config.symbol, target, pos, bar.close,
                math.nan if last_close is None else last_close, self._market_ns, price_ns,
            )
            result.verdict = verdict
            if verdict.denied:
                self.orders["denied"] += 1
            if verdict.order_qty:
                result.order_qty = verdict.order_qty
                result.closing = verdict.closing
                self._pending = self._new_pending(pos + verdict.order_qty, verdict.order_qty, bar.ts, verdict.closing)
        result.target = pos + result.order_qty
        self.evidence.on_bars(self.config.evidence, self.bars, self.live, self.sim, self.config.capital_usd)
        result.latency_s = self.clock() - t0
        return result
