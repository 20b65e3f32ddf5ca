"""Brokers: one interface, a simulated broker, IBKR Pro fees and square-root impact.

Units everywhere in this module: quantities are signed whole shares (+ buy,
- sell); prices are USD per share; fees are USD; slippage is in basis points
of the reference price, positive = adverse; times are timezone-aware UTC.

The broker interface (:class:`Broker`) is what the trader talks to, whatever
executes the orders: :class:`SimBroker` here, ``quantramp.trader.ib.IBBroker``
for Interactive Brokers. An order moves through :class:`OrderState`::

    NEW -> SUBMITTED -> PARTIALLY_FILLED -> FILLED
      \\        \\               \\-> CANCELLED (the unfilled rest)
       \\        \\-> CANCELLED | REJECTED
        \\-> REJECTED (refused before it reached the market) | CANCELLED

FILLED, CANCELLED and REJECTED are terminal: no state leaves them (a fill
that races a cancel is still booked, see :class:`OrderBook`). Every REJECTED
and CANCELLED carries a reason.

The older bar-level call :meth:`SimBroker.execute` (one market order against
one bar, returning a :class:`Fill`) is kept as it was; :class:`FillBroker` puts
any such call behind the :class:`Broker` interface the engine drives.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from enum import Enum
from typing import Callable, Iterable, Protocol, runtime_checkable

import numpy as np

from .session import DAILY_BAR_SECONDS, SESSION_SECONDS

# -- fees -------------------------------------------------------------------------------

#: IBKR Pro, US stocks, tiered (<= 300,000 shares a month): USD per share
IBKR_PER_SHARE_USD = 0.0035
#: IBKR Pro minimum per order, USD
IBKR_MIN_PER_ORDER_USD = 0.35
#: IBKR Pro maximum per order, as a fraction of trade value
IBKR_MAX_PCT_OF_VALUE = 0.01

#: IBKR Pro Tiered, US stocks: (monthly shares up to and including, USD per share).
#: Source: interactivebrokers.com, "Commissions: Stocks, ETFs and Warrants -
#: North America", IBKR Pro, Tiered: <= 300,000 shares/month USD 0.0035;
#: 300,001-3,000,000 USD 0.0020; 3,000,001-20,000,000 USD 0.0015;
#: 20,000,001-100,000,000 USD 0.0010; > 100,000,000 USD 0.0005. Minimum per
#: order USD 0.35, maximum 1% of trade value (both before pass-through fees).
IBKR_PRO_TIERS: tuple[tuple[float, float], ...] = (
    (300_000, 0.0035),
    (3_000_000, 0.0020),
    (20_000_000, 0.0015),
    (100_000_000, 0.0010),
    (math.inf, 0.0005),
)


def ibkr_tier_rate(month_shares: float) -> float:
    """IBKR Pro Tiered per-share rate (USD/share) for an order placed after
    ``month_shares`` shares were already traded this calendar month.

    The tier is chosen by the month-to-date volume *before* the order; an order
    that crosses a tier boundary is charged at the rate of the tier it starts
    in (IBKR applies tiers on cumulative monthly volume at the time of the
    order; it does not split one order across tiers).
    """
    if month_shares < 0 or not math.isfinite(month_shares):
        raise ValueError(f"month-to-date shares must be >= 0, got {month_shares}")
    for upto, rate in IBKR_PRO_TIERS:
        if month_shares < upto:
            return rate
    return IBKR_PRO_TIERS[-1][1]  # pragma: no cover - the last tier is unbounded


def ibkr_commission(qty: float, price: float, month_shares: float = 0.0) -> float:
    """Commission in USD for one US stock order of ``|qty|`` shares at ``price`` USD.

    IBKR Pro pricing for US stocks (interactivebrokers.com, "Commissions:
    Stocks, ETFs and Warrants - North America", IBKR Pro Tiered; the Fixed plan
    has the same shape at USD 0.005/share, min USD 1.00): the per-share rate of
    the tier that ``month_shares`` (shares already traded this month, default 0
    = the lowest-volume tier, USD 0.0035/share) falls in, see
    :data:`IBKR_PRO_TIERS`; at least USD 0.35 per order, at most 1% of the
    trade value. Exchange, clearing and regulatory pass-through fees are not
    in this figure (see :class:`FeeSchedule`). Zero shares cost nothing.
    """
    shares = abs(qty)
    if shares == 0:
        return 0.0
    value = shares * price
    fee = max(ibkr_tier_rate(month_shares) * shares, IBKR_MIN_PER_ORDER_USD)
    return min(fee, IBKR_MAX_PCT_OF_VALUE * value)


#: Pass-through and regulatory rates of the IBKR Pro Tiered US stock schedule, as of 2025
#: (interactivebrokers.com "Commissions: Stocks, ETFs and Warrants - North America", IBKR Pro,
#: Tiered, third-party fees; read for the 2026-11 risk review, reviews/trader-review.md §1):
#: NSCC/DTC clearing USD 0.00020/share; NYSE pass-through 0.000175 x commission; FINRA
#: pass-through 0.00056 x commission; exchange fee for an order that removes liquidity (the
#: pod sends market orders) about USD 0.0030/share (NYSE/Nasdaq top take fee, a flat stand-in
#: for the venue schedule). Regulatory, sells only: FINRA Trading Activity Fee USD 0.000166
#: per share sold, at most USD 8.30 per trade (FINRA By-Laws Schedule A, rate from
#: 2024-01-01); SEC Section 31 fee USD 27.80 per million of sale proceeds (SEC fee rate
#: advisory for fiscal 2024, effective 2024-05-22). The SEC rate for fiscal 2025 was USD 0.00
#: per million from 2025-05-14 and the fiscal-2026 order was not checked here: 27.80 is the
#: last non-zero rate, kept as a conservative bound (set QR_SEC_FEE_RATE to the current one).
IBKR_CLEARING_PER_SHARE_USD = 0.00020
IBKR_EXCHANGE_REMOVE_PER_SHARE_USD = 0.0030
IBKR_PASS_THROUGH_OF_COMMISSION = 0.000175 + 0.00056
FINRA_TAF_PER_SHARE_USD = 0.000166
FINRA_TAF_MAX_USD = 8.30
SEC_FEE_RATE = 27.80e-6


@dataclass(frozen=True)
class FeeSchedule:
    """Fees of one US stock execution, USD: IBKR Pro Tiered all-in by default (see the rates
    above: commission, pass-throughs on the commission, clearing, exchange, and on sales the
    SEC Section 31 fee and the FINRA TAF). :meth:`commission_only` is the commission alone.

    ``commission``: IBKR Pro Tiered (:func:`ibkr_commission`). With
    ``tiered_by_month_volume`` the broker counts the shares it executed in the
    current calendar month and moves down the tiers; without it (the default)
    every order pays the lowest-volume tier, USD 0.0035/share, which is right
    for strategies far below 300,000 shares a month and conservative above.

    ``clearing_per_share`` (NSCC/DTC clearing, per share, both sides),
    ``exchange_per_share`` (a flat stand-in for the venue fee, per share),
    ``pass_through_of_commission`` (NYSE + FINRA pass-throughs, fraction of the
    commission), ``sec_fee_rate`` (SEC Section 31 fee, fraction of the sale value,
    sells only), ``finra_taf_per_share`` and ``finra_taf_max_usd`` (FINRA Trading
    Activity Fee, per share sold, capped per trade).
    """

    tiered_by_month_volume: bool = False
    clearing_per_share: float = IBKR_CLEARING_PER_SHARE_USD
    exchange_per_share: float = IBKR_EXCHANGE_REMOVE_PER_SHARE_USD
    sec_fee_rate: float = SEC_FEE_RATE
    finra_taf_per_share: float = FINRA_TAF_PER_SHARE_USD
    finra_taf_max_usd: float = FINRA_TAF_MAX_USD
    pass_through_of_commission: float = IBKR_PASS_THROUGH_OF_COMMISSION

    @staticmethod
    def commission_only(tiered_by_month_volume: bool = False) -> "FeeSchedule":
        """The IBKR commission alone (every pass-through and regulatory fee 0)."""
        return FeeSchedule(tiered_by_month_volume, 0.0, 0.0, 0.0, 0.0, math.inf, 0.0)

    def fees(self, qty: float, price: float, month_shares: float = 0.0) -> float:
        """Total fees (USD) of an execution of ``qty`` signed shares at ``price`` USD."""
        shares = abs(qty)
        if shares == 0:
            return 0.0
        commission = ibkr_commission(shares, price, month_shares if self.tiered_by_month_volume else 0.0)
        total = commission * (1.0 + self.pass_through_of_commission)
        total += (self.clearing_per_share + self.exchange_per_share) * shares
        if qty < 0:
            total += self.sec_fee_rate * shares * price
            total += min(self.finra_taf_per_share * shares, self.finra_taf_max_usd)
        return total


# -- impact -----------------------------------------------------------------------------


def sqrt_impact_bps(qty: float, sigma_daily: float, adv_shares: float, k: float = 1.0) -> float:
    """Modelled market impact of an order, in basis points (>= 0).

    Square-root law: ``k * sigma_daily * sqrt(|qty| / ADV) * 1e4``, with
    ``sigma_daily`` the daily return volatility (fraction, e.g. 0.015),
    ``adv_shares`` the average daily volume in shares and ``k`` a constant of
    order one. References: Almgren, Thum, Hauptmann & Li (2005), "Direct
    Estimation of Equity Market Impact", Risk 18(7); Torre (1997), BARRA
    Market Impact Model Handbook; Grinold & Kahn, "Active Portfolio
    Management" (2000), ch. 16 (the square-root law).
    """
    if qty == 0:
        return 0.0
    if adv_shares <= 0 or not math.isfinite(adv_shares):
        raise ValueError(f"ADV must be positive, got {adv_shares}")
    return k * sigma_daily * math.sqrt(abs(qty) / adv_shares) * 1e4


@dataclass(frozen=True)
class ImpactModel:
    """Inputs of the square-root impact law.

    sigma_daily: daily return volatility (fraction). adv_shares: average daily
    volume (shares). k: impact constant (dimensionless).
    """

    sigma_daily: float
    adv_shares: float
    k: float = 1.0

    def bps(self, qty: float) -> float:
        """Modelled slippage for ``qty`` shares, bps (see :func:`sqrt_impact_bps`)."""
        return sqrt_impact_bps(qty, self.sigma_daily, self.adv_shares, self.k)


def estimate_impact_model(
    close: np.ndarray,
    volume: np.ndarray,
    bars_per_session: int,
    k: float = 1.0,
    ts: np.ndarray | None = None,
) -> ImpactModel:
    """Estimate ImpactModel inputs from a bar series.

    close: USD, shape (n,); volume: shares per bar, shape (n,); ts: optional bar
    times (datetime64), shape (n,). sigma_daily is the standard deviation of
    one-bar log returns times sqrt(bars_per_session); with ``ts``, returns
    across a gap longer than the usual bar spacing (overnight, weekends) are
    left out so the gaps do not inflate the intraday volatility. ADV is the mean
    bar volume times bars_per_session. Daily bars (``bars_per_session`` 1, see
    :func:`~.session.bars_per_session`): every return between bars at most
    :data:`DAILY_RETURN_MAX_GAP_S` apart counts (consecutive sessions over weekends
    and holidays are the daily returns, not gaps).
    """
    close = np.asarray(close, dtype=float)
    volume = np.asarray(volume, dtype=float)
    r = np.diff(np.log(close))
    if ts is not None:
        gaps = np.diff(np.asarray(ts))
        if bars_per_session <= 1:
            r = r[gaps <= np.timedelta64(DAILY_RETURN_MAX_GAP_S, "s")]
        else:
            r = r[gaps <= np.median(gaps)]
    sigma_daily = float(np.std(r, ddof=1) * math.sqrt(bars_per_session))
    adv = float(np.mean(volume) * bars_per_session)
    return ImpactModel(sigma_daily=sigma_daily, adv_shares=adv, k=k)


#: daily bars: the longest gap (s) between two bars whose return is a daily return: 7 days
#: covers a weekend plus holidays and the longest XNYS closure since 2000 (after 2001-09-11,
#: Monday 10th to Monday 17th); a longer gap is missing data, left out
DAILY_RETURN_MAX_GAP_S = 7 * 86_400
#: daily bars: weight of the past in the exponential averages, per bar (RiskMetrics
#: Technical Document, J.P. Morgan/Reuters 1996, the daily decay factor 0.94: half-life
#: about 11 sessions)
RISKMETRICS_DAILY_DECAY = 0.94
#: SimBroker participation, share of the fill bar's volume an order may take: 10 % of an
#: intraday bar; 1 % of a daily bar, since a daily order fills at one price, the session's
#: open (the opening auction trades a few per cent of a day's volume, so 10 % of the whole
#: day at the open would be a fiction; 1 % is a conservative stand-in)
INTRADAY_PARTICIPATION = 0.1
DAILY_PARTICIPATION = 0.01


def participation_for(bar_seconds: float) -> float:
    """SimBroker ``participation`` (share of the bar's volume, 0..1) for bars of ``bar_seconds``
    seconds: :data:`INTRADAY_PARTICIPATION` or, for daily bars, :data:`DAILY_PARTICIPATION`."""
    return DAILY_PARTICIPATION if bar_seconds >= DAILY_BAR_SECONDS else INTRADAY_PARTICIPATION
#: minimum price increment of NMS stocks at or above USD 1.00 (Reg NMS Rule 612), USD
TICK_USD = 0.01


@dataclass
class CausalImpact:
    """Square-root impact plus half the spread, with every input from *past* bars only.

    ``bps(qty) = half_spread_bps + k * sigma_daily * sqrt(|qty| / adv_shares) * 1e4``
    (square-root law, Toth et al. 2011, PRX 1, 021006; Almgren et al. 2005; see
    :func:`sqrt_impact_bps`). Estimates, updated by :meth:`update` after each bar (so a fill
    at bar t+1's open is costed with bars up to t):

    - sigma_daily: exponentially weighted RMS of one-bar log returns (RiskMetrics, J.P.
      Morgan 1996), half-life one session, times sqrt(bars per session); returns across a
      gap longer than 1.5 bars (overnight, halts) are left out; ``prior_sigma_daily`` until
      ``min_returns`` returns were seen;
    - adv_shares: exponentially weighted mean bar volume (same half-life) x bars per session;
    - daily bars (``bar_seconds`` 86400, one bar per session): bars per session 1, the
      RiskMetrics daily decay 0.94 (:data:`RISKMETRICS_DAILY_DECAY`; a one-bar half-life would
      be a one-day memory), and a return counts across weekends and holidays (gaps up to
      :data:`DAILY_RETURN_MAX_GAP_S`);
    - half_spread_bps: half of one tick (USD 0.01, Reg NMS Rule 612: the narrowest quoted
      spread) over the last close, in bps (AAPL at $230: 0.22 bps).

    Units: bar_seconds seconds; sigma a fraction per day; volume shares; prices USD.
    The state is JSON-able (:meth:`to_dict` / :meth:`load`).
    """

    bar_seconds: int = 60
    #: seconds of a regular session of the symbol's exchange (XNYS 23,400; :attr:`.session.Calendar.session_seconds`)
    session_seconds: float = SESSION_SECONDS
    k: float = 1.0
    prior_sigma_daily: float = 0.02
    min_returns: int = 30
    n_returns: int = 0
    mean_sq_return: float = 0.0
    mean_volume: float = math.nan
    last_close: float = math.nan
    last_ts_ns: int = 0

    @property
    def bars_per_session(self) -> float:
        """Bars in one regular session (XNYS: 390 on minute bars, 78 on 5-minute bars; 1 on daily bars)."""
        if self.bar_seconds >= DAILY_BAR_SECONDS:
            return 1.0
        return self.session_seconds / self.bar_seconds

    def _alpha(self) -> float:
        if self.bar_seconds >= DAILY_BAR_SECONDS:
            return RISKMETRICS_DAILY_DECAY
        return 0.5 ** (1.0 / self.bars_per_session)  # weight of the past: half-life one session

    def _max_gap_ns(self) -> float:
        """Longest gap between two bars (ns) whose return enters sigma: 1.5 bars intraday."""
        if self.bar_seconds >= DAILY_BAR_SECONDS:
            return DAILY_RETURN_MAX_GAP_S * 1_000_000_000
        return 1.5 * self.bar_seconds * 1_000_000_000

    def update(self, ts_ns: int, close: float, volume: float) -> None:
        """Take one accepted bar (start ``ts_ns`` ns UTC, close USD, volume shares)."""
        a = self._alpha()
        if self.last_close > 0 and 0 < ts_ns - self.last_ts_ns <= self._max_gap_ns():
            r = math.log(close / self.last_close)
            self.mean_sq_return = r * r if self.n_returns == 0 else a * self.mean_sq_return + (1.0 - a) * r * r
            self.n_returns += 1
        if math.isfinite(volume) and volume >= 0:
            self.mean_volume = volume if not math.isfinite(self.mean_volume) else a * self.mean_volume + (1.0 - a) * volume
        self.last_close = close
        self.last_ts_ns = int(ts_ns)

    def update_run(self, ts_ns: list[int], closes: list[float], volumes: list[float]) -> None:
        """:meth:`update` for each bar of a run, in order (the same arithmetic, bit for bit)."""
        a = self._alpha()
        b = 1.0 - a
        gap = self._max_gap_ns()
        n, msr, vol, last, last_ts = self.n_returns, self.mean_sq_return, self.mean_volume, self.last_close, self.last_ts_ns
        log, fin = math.log, math.isfinite
        for t, c, v in zip(ts_ns, closes, volumes):
            if last > 0 and 0 < t - last_ts <= gap:
                r = log(c / last)
                msr = r * r if n == 0 else a * msr + b * r * r
                n += 1
            if fin(v) and v >= 0:
                vol = v if not fin(vol) else a * vol + b * v
            last, last_ts = c, t
        self.n_returns, self.mean_sq_return, self.mean_volume, self.last_close, self.last_ts_ns = n, msr, vol, last, int(last_ts)

    @property
    def sigma_daily(self) -> float:
        """Daily return volatility, fraction (the prior until enough returns were seen)."""
        if self.n_returns < self.min_returns:
            return self.prior_sigma_daily
        return math.sqrt(self.mean_sq_return * self.bars_per_session)

    @property
    def adv_shares(self) -> float:
        """Average daily volume, shares (inf before the first bar: no impact term)."""
        v = self.mean_volume
        return v * self.bars_per_session if math.isfinite(v) and v > 0 else math.inf

    @property
    def half_spread_bps(self) -> float:
        """Half of one tick over the last close, bps (0 before the first bar)."""
        return 0.5 * TICK_USD / self.last_close * 1e4 if self.last_close > 0 else 0.0

    def bps(self, qty: float) -> float:
        """Modelled cost of ``qty`` shares, bps (>= 0; 0 for no shares)."""
        if qty == 0:
            return 0.0
        adv = self.adv_shares
        impact = 0.0 if adv == math.inf else self.k * self.sigma_daily * math.sqrt(abs(qty) / adv) * 1e4
        return self.half_spread_bps + impact

    def to_dict(self) -> dict:
        """JSON-able state."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def load(self, d: dict) -> None:
        """Restore :meth:`to_dict` output in place (the broker holds the same object)."""
        for f in self.__dataclass_fields__:
            if f in d:
                setattr(self, f, type(getattr(self, f))(d[f]))


# -- the bar-level fill used by the engine ----------------------------------------------


@dataclass(frozen=True)
class Fill:
    """Outcome of one order against one bar (:meth:`SimBroker.execute`).

    ordered_qty / filled_qty: signed shares. ref_price: the bar open the order
    was filled against (USD). price: average fill price incl. slippage (USD).
    slippage_bps: realised, adverse positive. modeled_slippage_bps: the
    deterministic square-root part. commission_usd: fees charged. paper: true
    for shadow (paper) fills. status: filled | partial | rejected. reason:
    why it was rejected or only partly filled ("" when filled).
    """

    ordered_qty: int
    filled_qty: int
    ref_price: float
    price: float
    slippage_bps: float
    modeled_slippage_bps: float
    commission_usd: float
    paper: bool
    status: str
    reason: str = ""


def fill_price(ref_price: float, qty: float, slippage_bps: float) -> float:
    """Price paid (buy) or received (sell) after adverse slippage, USD per share."""
    side = 1.0 if qty > 0 else -1.0
    return ref_price * (1.0 + side * slippage_bps * 1e-4)


def modeled_fill(
    qty: int, ref_price: float, impact: ImpactModel, paper: bool = False, fees: FeeSchedule | None = None
) -> Fill:
    """The simulated-book fill: always fully filled at ``ref_price`` plus modelled slippage; fees by
    ``fees`` (default: the all-in :class:`FeeSchedule`)."""
    bps = impact.bps(qty)
    px = fill_price(ref_price, qty, bps) if qty else ref_price
    return Fill(
        ordered_qty=qty,
        filled_qty=qty,
        ref_price=ref_price,
        price=px,
        slippage_bps=bps,
        modeled_slippage_bps=bps,
        commission_usd=(fees or _ALL_IN).fees(qty, px),
        paper=paper,
        status="filled",
    )


_ALL_IN = FeeSchedule()

# -- the broker interface ---------------------------------------------------------------


class OrderState(str, Enum):
    """Lifecycle of an order (see the module docstring for the transitions)."""

    NEW = "NEW"  #: created, not yet acknowledged by the broker
    SUBMITTED = "SUBMITTED"  #: accepted and working, nothing filled
    PARTIALLY_FILLED = "PARTIALLY_FILLED"  #: working, some shares filled
    FILLED = "FILLED"  #: completely filled (terminal)
    CANCELLED = "CANCELLED"  #: cancelled, possibly after partial fills (terminal)
    REJECTED = "REJECTED"  #: refused by the broker or a venue (terminal)

    @property
    def terminal(self) -> bool:
        """True for FILLED, CANCELLED and REJECTED."""
        return self in TERMINAL_STATES

    @property
    def working(self) -> bool:
        """True while the order can still fill (NEW, SUBMITTED, PARTIALLY_FILLED)."""
        return not self.terminal


TERMINAL_STATES = frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED})


@dataclass(frozen=True)
class Order:
    """A market (``MKT``) or limit (``LMT``) day order for US stock.

    order_id: the client's id, unique per broker (sent to IB as ``orderRef``).
    symbol: ticker. qty: signed shares (+ buy, - sell), never 0.
    limit_price: USD per share for LMT orders. closing: true for orders that
    flatten at the end of the day (reported, not treated differently here).
    """

    order_id: str
    symbol: str
    qty: int
    order_type: str = "MKT"
    limit_price: float | None = None
    closing: bool = False

    def __post_init__(self) -> None:
        if not self.order_id:
            raise ValueError("order_id must not be empty")
        if not isinstance(self.qty, (int, np.integer)) or self.qty == 0:
            raise ValueError(f"qty must be a non-zero whole number of shares, got {self.qty!r}")
        if self.order_type not in ("MKT", "LMT"):
            raise ValueError(f"order_type must be MKT or LMT, got {self.order_type!r}")
        if self.order_type == "LMT" and not (self.limit_price and self.limit_price > 0):
            raise ValueError("an LMT order needs a positive limit_price")

    @property
    def side(self) -> str:
        """BUY or SELL."""
        return "BUY" if self.qty > 0 else "SELL"


@dataclass(frozen=True)
class Execution:
    """One fill of (part of) an order.

    exec_id: unique per broker. qty: signed shares filled (same sign as the
    order). price: USD per share. commission_usd: fees of this fill (IB reports
    them in a separate message: 0 until it arrives, see OrderUpdate).
    ref_price / slippage_bps / modeled_slippage_bps: SimBroker's reference
    (bar open) and slippage; NaN when the broker does not know them.
    """

    exec_id: str
    order_id: str
    symbol: str
    qty: int
    price: float
    commission_usd: float
    ts: datetime
    ref_price: float = math.nan
    slippage_bps: float = math.nan
    modeled_slippage_bps: float = math.nan


@dataclass(frozen=True)
class OrderUpdate:
    """A snapshot of one order.

    filled_qty: signed shares filled so far. avg_price: USD per share of the
    filled shares (NaN while nothing is filled). commission_usd: fees so far.
    reason: why it is REJECTED or CANCELLED ("" otherwise). broker_ref: the
    broker's own id (IB orderId), if any. updated_at: UTC.
    """

    order: Order
    state: OrderState
    filled_qty: int = 0
    avg_price: float = math.nan
    commission_usd: float = 0.0
    reason: str = ""
    broker_ref: str | None = None
    updated_at: datetime | None = None

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def remaining_qty(self) -> int:
        """Signed shares not (yet) filled."""
        return self.order.qty - self.filled_qty


#: listener(update, execution): called on every state change and every fill
#: (execution is None for a state change without a fill)
OrderListener = Callable[[OrderUpdate, "Execution | None"], None]


@runtime_checkable
class Broker(Protocol):
    """What the trader needs from a broker. All calls are non-blocking.

    ``submit`` never raises for a business refusal: a refused order comes back
    REJECTED with a reason (broker not ready, duplicate id, chaos, venue). It
    raises ``ValueError`` only for a malformed call. Fills and state changes
    are pushed to the listeners added with ``add_listener`` (and can be polled
    with ``order`` / ``open_orders``).
    """

    def submit(self, order: Order) -> OrderUpdate:
        """Send ``order``; returns its state right after (NEW, SUBMITTED or REJECTED)."""
        ...

    def cancel(self, order_id: str) -> OrderUpdate:
        """Ask to cancel a working order; returns its state (CANCELLED when done at
        once, else unchanged until the broker confirms). Unknown id: KeyError."""
        ...

    def order(self, order_id: str) -> OrderUpdate:
        """The current state of one order (KeyError if unknown)."""
        ...

    def open_orders(self) -> list[OrderUpdate]:
        """Orders still working (NEW, SUBMITTED, PARTIALLY_FILLED)."""
        ...

    def positions(self) -> dict[str, int]:
        """Signed shares per symbol (symbols with 0 shares left out)."""
        ...

    def add_listener(self, listener: OrderListener) -> None:
        """Call ``listener(update, execution)`` on every state change and fill."""
        ...

    @property
    def ready(self) -> bool:
        """True when new orders may be sent (connected and reconciled)."""
        ...


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Entry:
    order: Order
    state: OrderState
    filled_qty: int = 0
    notional: float = 0.0  # sum of |qty| * price of fills, USD
    commission_usd: float = 0.0
    reason: str = ""
    broker_ref: str | None = None
    updated_at: datetime | None = None

    def snapshot(self) -> OrderUpdate:
        n = abs(self.filled_qty)
        return OrderUpdate(
            order=self.order,
            state=self.state,
            filled_qty=self.filled_qty,
            avg_price=(self.notional / n) if n else math.nan,
            commission_usd=self.commission_usd,
            reason=self.reason,
            broker_ref=self.broker_ref,
            updated_at=self.updated_at,
        )


class OrderBook:
    """Orders, their states, fills and the positions they add up to.

    Shared bookkeeping of the brokers: it enforces the state machine (no move
    out of a terminal state), de-duplicates executions by ``exec_id``, keeps
    positions as the sum of fills plus a starting position, and calls the
    listeners. A fill that arrives after the order was cancelled (a cancel that
    raced the fill) is booked: positions stay right, the state stays terminal.
    """

    def __init__(self, clock: Callable[[], datetime] = _utcnow) -> None:
        self._orders: dict[str, _Entry] = {}
        self._working: dict[str, _Entry] = {}  # the non-terminal subset of _orders, in submission order
        self._exec_ids: set[str] = set()
        self._positions: dict[str, int] = {}
        self._listeners: list[OrderListener] = []
        self.clock = clock

    # -- reading ----------------------------------------------------------------------------
    def __contains__(self, order_id: str) -> bool:
        return order_id in self._orders

    def get(self, order_id: str) -> OrderUpdate:
        return self._orders[order_id].snapshot()

    def working(self) -> list[OrderUpdate]:
        """Orders that can still fill, in submission order (an index: no scan of the history)."""
        return [e.snapshot() for e in self._working.values()]

    def all(self) -> list[OrderUpdate]:
        return [e.snapshot() for e in self._orders.values()]

    def positions(self) -> dict[str, int]:
        return {s: q for s, q in self._positions.items() if q}

    def seen_execution(self, exec_id: str) -> bool:
        return exec_id in self._exec_ids

    # -- writing ----------------------------------------------------------------------------
    def add_listener(self, listener: OrderListener) -> None:
        self._listeners.append(listener)

    def _emit(self, entry: _Entry, execution: Execution | None) -> OrderUpdate:
        snap = entry.snapshot()
        for listener in list(self._listeners):
            listener(snap, execution)
        return snap

    def add(self, order: Order, state: OrderState = OrderState.NEW, reason: str = "", broker_ref: str | None = None) -> OrderUpdate:
        """Record a new order (ValueError if the id is taken)."""
        if order.order_id in self._orders:
            raise ValueError(f"duplicate order id {order.order_id!r}")
        e = _Entry(order, state, reason=reason, broker_ref=broker_ref, updated_at=self.clock())
        self._orders[order.order_id] = e
        if not state.terminal:
            self._working[order.order_id] = e
        return self._emit(e, None)

    def set_broker_ref(self, order_id: str, broker_ref: str) -> None:
        self._orders[order_id].broker_ref = broker_ref

    def transition(self, order_id: str, state: OrderState, reason: str = "") -> OrderUpdate:
        """Move an order to ``state``; a move out of a terminal state is ignored
        (the snapshot returned is unchanged). Same state: no event."""
        e = self._orders[order_id]
        if e.state.terminal or e.state == state:
            return e.snapshot()
        e.state = state
        if state.terminal:
            self._working.pop(order_id, None)
        if reason:
            e.reason = reason
        e.updated_at = self.clock()
        return self._emit(e, None)

    def add_commission(self, order_id: str, usd: float) -> None:
        """Fees reported after the fill (IB commission reports)."""
        self._orders[order_id].commission_usd += usd

    def fill(self, execution: Execution) -> OrderUpdate | None:
        """Book one execution; returns None if its exec_id was already booked."""
        if execution.exec_id in self._exec_ids:
            return None
        e = self._orders[execution.order_id]
        if execution.qty == 0 or (execution.qty > 0) != (e.order.qty > 0):
            raise ValueError(f"execution {execution.exec_id} has the wrong side or no shares: {execution.qty}")
        self._exec_ids.add(execution.exec_id)
        e.filled_qty += execution.qty
        e.notional += abs(execution.qty) * execution.price
        e.commission_usd += execution.commission_usd
        e.updated_at = self.clock()
        self._positions[execution.symbol] = self._positions.get(execution.symbol, 0) + execution.qty
        if not e.state.terminal:
            if abs(e.filled_qty) >= abs(e.order.qty):
                e.state = OrderState.FILLED
                self._working.pop(execution.order_id, None)
            else:
                e.state = OrderState.PARTIALLY_FILLED
        return self._emit(e, execution)

    def set_positions(self, positions: dict[str, int]) -> None:
        """Replace the positions (reconciliation with the broker of record)."""
        self._positions = {s: int(q) for s, q in positions.items() if q}


# -- the simulated broker ---------------------------------------------------------------

#: environment variable: probability (0..1) that the simulated broker rejects an order
CHAOS_REJECT_RATE_ENV = "CHAOS_REJECT_RATE"
#: reasons of simulated rejects, drawn at random (wording after common IB reject messages)
CHAOS_REJECT_REASONS: tuple[str, ...] = (
    "chaos: order rejected by the exchange (simulated)",
    "chaos: order rejected by the broker's risk check (simulated)",
    "chaos: routing error, order not accepted (simulated)",
)


def chaos_reject_rate_from_env(environ: dict[str, str] | None = None) -> float:
    """CHAOS_REJECT_RATE from the environment as a probability in [0, 1]; 0 when unset or empty."""
    env = os.environ if environ is None else environ
    raw = env.get(CHAOS_REJECT_RATE_ENV, "").strip()
    if not raw:
        return 0.0
    rate = float(raw)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{CHAOS_REJECT_RATE_ENV} must be in [0, 1], got {raw!r}")
    return rate


class BookBroker:
    """The read side of the :class:`Broker` interface for brokers that track their orders
    in an :class:`OrderBook` (``self.book``): listeners, order look-up, working orders and
    positions (signed shares per symbol)."""

    book: "OrderBook"

    def add_listener(self, listener: OrderListener) -> None:
        self.book.add_listener(listener)

    def order(self, order_id: str) -> OrderUpdate:
        return self.book.get(order_id)

    def open_orders(self) -> list[OrderUpdate]:
        return self.book.working()

    def positions(self) -> dict[str, int]:
        return self.book.positions()


class _LocalBroker(BookBroker):
    """Brokers that fill locally (no connection to lose): always ready, cancel at once."""

    @property
    def ready(self) -> bool:
        """Always true: a local broker has no connection to lose."""
        return True

    def _accept(self, order: Order, reject_reason: str = "") -> OrderUpdate:
        """Book ``order``: SUBMITTED, or REJECTED with ``reject_reason``; a duplicate id is
        refused without touching the original order."""
        if order.order_id in self.book:
            return replace(
                self.book.get(order.order_id), state=OrderState.REJECTED, reason=f"duplicate order id {order.order_id!r}"
            )
        self.book.add(order, OrderState.NEW)
        if reject_reason:
            return self.book.transition(order.order_id, OrderState.REJECTED, reject_reason)
        return self.book.transition(order.order_id, OrderState.SUBMITTED)

    def cancel(self, order_id: str) -> OrderUpdate:
        """Cancel a working order at once; a terminal order is returned unchanged."""
        return self.book.transition(order_id, OrderState.CANCELLED, "cancelled by client")


class SimBroker(_LocalBroker):
    """Simulated broker: market orders fill at the next bar's open plus slippage.

    Slippage = modelled square-root impact (:func:`sqrt_impact_bps`, the
    square-root law of Almgren et al. 2005 / Torre 1997 / Grinold-Kahn) times a
    seeded log-normal factor with mean 1 (``noise_sigma`` is its log standard
    deviation), so realised slippage differs from modelled fill by fill but not
    on average. Fees: IBKR Pro Tiered US stocks (:func:`ibkr_commission`;
    ``fees`` adds monthly-volume tiers and pass-through fees, see
    :class:`FeeSchedule`). Limit orders are not modelled beyond their fill
    price being capped: a buy LMT below the bar open (a sell LMT above it)
    does not fill on that bar.

    Partial fills: an order fills at most ``participation`` (0..1] of the
    fill bar's volume (shared by all working orders of the symbol, in order of
    submission). What is left is cancelled at the end of the bar
    (``remainder="cancel"``, immediate-or-cancel, the default) or stays working
    for the next bars (``remainder="keep"``).

    Chaos: each submitted order is rejected with probability
    ``chaos_reject_rate`` (default: env CHAOS_REJECT_RATE, else 0), with a
    reason from :data:`CHAOS_REJECT_REASONS`; drawn from its own generator
    seeded by ``seed``, so chaos does not change the slippage draws.

    Two ways to use it: :meth:`execute` (one order against one bar, returns a
    :class:`Fill`), or the :class:`Broker` interface (``submit`` / ``cancel``,
    then :meth:`on_bar` for each new bar; what the engine uses). For one order
    per bar the two give the same fills, slippage draws and fees (the chaos
    draw happens at ``submit`` instead of ``execute``; tiered fees take the
    month from the bar time ``ts`` instead of the clock).
    """

    def __init__(
        self,
        impact: ImpactModel,
        *,
        seed: int = 0,
        noise_sigma: float = 0.5,
        participation: float = 0.1,
        paper: bool = False,
        chaos_reject_rate: float | None = None,
        remainder: str = "cancel",
        fees: FeeSchedule | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not 0.0 < participation <= 1.0:
            raise ValueError(f"participation must be in (0, 1], got {participation}")
        if remainder not in ("cancel", "keep"):
            raise ValueError(f"remainder must be 'cancel' or 'keep', got {remainder!r}")
        rate = chaos_reject_rate_from_env() if chaos_reject_rate is None else float(chaos_reject_rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"chaos_reject_rate must be in [0, 1], got {rate}")
        self.impact = impact
        self.noise_sigma = noise_sigma
        self.participation = participation
        self.paper = paper
        self.chaos_reject_rate = rate
        self.remainder = remainder
        self.fee_schedule = fees or FeeSchedule()
        self._rng = np.random.default_rng(seed)
        self._chaos_rng = np.random.default_rng([seed, 0xC4A05])
        self._month: tuple[int, int] | None = None
        self._month_shares = 0
        self.book = OrderBook(clock)
        self._exec_seq = itertools.count(1)
        self.clock = clock

    # -- shared pieces ----------------------------------------------------------------------
    def _chaos_reject(self) -> str | None:
        """A reject reason with probability chaos_reject_rate, else None (no draw at rate 0)."""
        if self.chaos_reject_rate <= 0.0:
            return None
        u, pick = self._chaos_rng.random(2)
        if u < self.chaos_reject_rate:
            return CHAOS_REJECT_REASONS[int(pick * len(CHAOS_REJECT_REASONS))]
        return None

    def _slippage(self, filled: int) -> tuple[float, float]:
        """(modelled, realised) slippage in bps for ``filled`` shares."""
        modeled = self.impact.bps(filled)
        s = self.noise_sigma
        factor = math.exp(s * float(self._rng.standard_normal()) - 0.5 * s * s)
        return modeled, modeled * factor

    def _fees(self, qty: int, price: float, ts: datetime | None) -> float:
        sched = self.fee_schedule
        if not sched.tiered_by_month_volume:
            return sched.fees(qty, price)
        when = ts or self.clock()
        month = (when.year, when.month)
        if month != self._month:
            self._month, self._month_shares = month, 0
        fee = sched.fees(qty, price, self._month_shares)
        self._month_shares += abs(qty)
        return fee

    def _cap(self, bar_volume: float) -> int:
        return math.floor(self.participation * max(bar_volume, 0.0)) if math.isfinite(bar_volume) else 0

    # -- the engine's bar-level call ----------------------------------------------------------
    def execute(self, qty: int, bar_open: float, bar_volume: float) -> Fill:
        """Fill ``qty`` signed shares against a bar with open ``bar_open`` (USD) and ``bar_volume`` shares.

        At most ``participation`` of the bar's volume fills; the rest is
        cancelled (status ``partial``; ``rejected`` when nothing filled or on
        a chaos reject, with the reason in ``Fill.reason``).
        """
        if qty == 0:
            raise ValueError("cannot execute an order of zero shares")
        why = self._chaos_reject()
        if why:
            return Fill(qty, 0, bar_open, bar_open, 0.0, 0.0, 0.0, self.paper, "rejected", why)
        cap = self._cap(bar_volume)
        filled = int(math.copysign(min(abs(qty), cap), qty)) if cap > 0 else 0
        if filled == 0:
            return Fill(qty, 0, bar_open, bar_open, 0.0, 0.0, 0.0, self.paper, "rejected", f"no liquidity: bar volume {bar_volume:g} shares")
        modeled, realised = self._slippage(filled)
        px = fill_price(bar_open, filled, realised)
        partial = filled != qty
        return Fill(
            ordered_qty=qty,
            filled_qty=filled,
            ref_price=bar_open,
            price=px,
            slippage_bps=realised,
            modeled_slippage_bps=modeled,
            commission_usd=self._fees(filled, px, None),
            paper=self.paper,
            status="partial" if partial else "filled",
            reason=f"participation cap: {abs(filled)} of {abs(qty)} shares ({self.participation:g} of bar volume {bar_volume:g})" if partial else "",
        )

    # -- the Broker interface -----------------------------------------------------------------
    def submit(self, order: Order) -> OrderUpdate:
        """Accept ``order`` for the next bar (SUBMITTED) or reject it (REJECTED, with reason)."""
        if order.order_id in self.book:
            return self._accept(order)
        return self._accept(order, self._chaos_reject())

    def on_bar(
        self,
        bar_open: float,
        bar_volume: float,
        *,
        symbol: str | None = None,
        ts: datetime | None = None,
    ) -> list[Execution]:
        """Execute the working orders of ``symbol`` (all symbols if None) against a
        new bar: open ``bar_open`` USD, ``bar_volume`` shares, time ``ts`` (UTC).
        Returns the executions, in order of submission."""
        if not (math.isfinite(bar_open) and bar_open > 0):
            raise ValueError(f"bar open must be a positive price, got {bar_open}")
        when = ts or self.clock()
        cap_left = self._cap(bar_volume)
        out: list[Execution] = []
        for upd in self.book.working():
            o = upd.order
            if symbol is not None and o.symbol != symbol:
                continue
            if upd.state == OrderState.NEW:
                continue  # pragma: no cover - submit() always moves past NEW
            marketable = o.order_type == "MKT" or (o.limit_price is not None and (bar_open <= o.limit_price if o.qty > 0 else bar_open >= o.limit_price))
            take = min(abs(upd.remaining_qty), cap_left) if marketable else 0
            if take > 0:
                cap_left -= take
                qty = int(math.copysign(take, o.qty))
                modeled, realised = self._slippage(qty)
                px = fill_price(bar_open, qty, realised)
                if o.order_type == "LMT":
                    px = min(px, o.limit_price) if qty > 0 else max(px, o.limit_price)
                ex = Execution(
                    exec_id=f"sim-{next(self._exec_seq)}",
                    order_id=o.order_id,
                    symbol=o.symbol,
                    qty=qty,
                    price=px,
                    commission_usd=self._fees(qty, px, when),
                    ts=when,
                    ref_price=bar_open,
                    slippage_bps=realised,
                    modeled_slippage_bps=modeled,
                )
                self.book.fill(ex)
                out.append(ex)
            after = self.book.get(o.order_id)
            if after.state.working and self.remainder == "cancel":
                why = (
                    f"not marketable: limit {o.limit_price} vs open {bar_open}"
                    if not marketable
                    else f"participation cap: {abs(after.filled_qty)} of {abs(o.qty)} shares filled "
                    f"({self.participation:g} of bar volume {bar_volume:g}), rest cancelled"
                )
                self.book.transition(o.order_id, OrderState.CANCELLED, why)
        return out

    def seed_positions(self, positions: dict[str, int]) -> None:
        """Start from these positions (signed shares per symbol), e.g. after a restart."""
        self.book.set_positions(positions)


class FillBroker(_LocalBroker):
    """The :class:`Broker` interface (plus ``on_bar``) over a bar-level fill function
    ``execute(qty, bar_open, bar_volume) -> Fill`` (e.g. :meth:`SimBroker.execute`).

    ``submit`` accepts every order (SUBMITTED); :meth:`on_bar` calls ``execute`` once
    per working order with its remaining signed shares and the bar's open (USD) and
    volume (shares), books the filled shares as one :class:`Execution` and ends the
    order: FILLED, CANCELLED (partly filled, the fill's reason) or REJECTED (nothing
    filled, the fill's reason). ``rng``: the generator behind the fills, exposed as
    ``_rng`` so the engine's snapshot carries it; ``paper``: fills are paper.
    """

    def __init__(
        self,
        execute: Callable[[int, float, float], Fill],
        *,
        rng: np.random.Generator | None = None,
        paper: bool = False,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._execute = execute
        self._rng = rng
        self.paper = paper
        self.book = OrderBook(clock)
        self.clock = clock
        self._exec_seq = itertools.count(1)

    def submit(self, order: Order) -> OrderUpdate:
        """Accept every order for the next bar (SUBMITTED); a duplicate id is REJECTED."""
        return self._accept(order)

    def on_bar(
        self, bar_open: float, bar_volume: float, *, symbol: str | None = None, ts: datetime | None = None
    ) -> list[Execution]:
        """Fill the working orders of ``symbol`` (all if None) against one bar; returns the executions."""
        when = ts or self.clock()
        out: list[Execution] = []
        for upd in self.book.working():
            o = upd.order
            if symbol is not None and o.symbol != symbol:
                continue
            f = self._execute(upd.remaining_qty, bar_open, bar_volume)
            if f.filled_qty:
                ex = Execution(
                    f"fill-{next(self._exec_seq)}", o.order_id, o.symbol, f.filled_qty, f.price, f.commission_usd,
                    when, f.ref_price, f.slippage_bps, f.modeled_slippage_bps,
                )
                self.book.fill(ex)
                out.append(ex)
            if self.book.get(o.order_id).state.working:
                state = OrderState.CANCELLED if f.filled_qty else OrderState.REJECTED
                self.book.transition(o.order_id, state, f.reason or "not filled")
        return out


def broker_states(updates: Iterable[OrderUpdate]) -> dict[str, int]:
    """Count of orders per state name (for the orders-by-status metric)."""
    counts = {s.value: 0 for s in OrderState}
    for u in updates:
        counts[u.state.value] += 1
    return counts
