"""Pre-trade risk governor: fail-closed checks on a target position, in a fixed order.

The engine asks for a target position (signed whole shares) of one symbol; the
governor returns the order that may be sent (signed shares, possibly clipped or
zero) and the reason code of every limit that acted. No I/O and no clock: the
caller passes the time (``now_ns``, market time) and the price's timestamp.
Anchors: SEC Rule 15c3-5 and the FIA best practices for automated trading risk
controls (order size, position, price collar, message throttle, kill switch),
and NautilusTrader's RiskEngine trading states ACTIVE / REDUCING / HALTED.

Checks, in this fixed order (deny = nothing is sent; clip = less is sent):

1.  ``invalid_price``: the price is NaN, infinite or <= 0 -> deny (fail closed,
    even a closing order: without a price nothing is sent);
2.  ``invalid_input``: a quantity is not a whole number or a time is missing -> deny;
3.  ``stale_price``: ``now - price_ts > max_price_age`` (or the price is from
    the future) -> deny.  (A request for no change is accepted here, no order.)
4.  ``trading_halted``: the trading state is HALTED (daily loss hard stop, the
    drawdown halt, or a manual halt / kill switch) -> only a *flattening*
    order passes: target 0, toward zero and never through it; else deny.
    The verdict also carries the cause (``daily_loss_limit``, ``drawdown_halt``
    or ``manual_halt``);
5.  ``trading_reducing``: the state is REDUCING -> the target is clipped so that
    |position| only shrinks (a flip becomes a close), else deny;
6.  ``drawdown_soft``: drawdown from peak equity >= the soft threshold -> new
    exposure is sized x ``drawdown_size_factor`` (0.5; seed runbook: "-$20
    drawdown halves size"); an existing same-side position is never forced down;
7.  ``max_position``: |target| x price <= max_position_usd (per symbol); a
    same-side position already above the cap after a rally may be kept, not grown;
8.  ``max_gross_position``: sum over symbols of |notional| <= max_gross_position_usd;
9.  ``capital_fraction``: the same gross notional <= capital of the current
    stage x max_capital_fraction (a pod at 1% of the strategy never holds more
    than that 1%);
Reduce-only orders (target 0, or a smaller position on the same side: halt, kill,
end-of-day and REDUCING exits) stop after check 5 and skip 6-13: only the
duplicate check applies to them. The controls 10-13 are meant for orders that
add risk; a flatten must never be held back by them (review D5).

10. ``max_order``: |order| x price <= max_order_usd (clip);
11. ``max_daily_turnover``: today's traded notional + |order| x price <=
    max_daily_turnover_usd for orders that add risk (reduce-only orders are
    exempt so a book can always be closed; they still count toward turnover);
12. ``price_collar``: |price - last trade price| / last trade price <=
    price_collar_ratio, else deny (also when there is no last trade price);
13. ``order_throttle``: at most ``max_orders_per_window`` accepted orders per
    rolling ``throttle_window_s`` -> deny;
14. ``duplicate_order``: the same symbol and signed quantity as the last
    accepted order within ``duplicate_window_s`` -> deny (a retried decision
    is never sent twice).

The trading state is derived from latches that move in :meth:`Governor.mark`
(called on every validated price): day P&L <= -max_daily_loss_usd -> HALTED for
the rest of that trading date (``daily_loss_limit``; :meth:`Governor.resume`
does not lift it); drawdown >= drawdown_halt_usd -> HALTED until
:meth:`Governor.resume` (an explicit action, recorded in ``state.resumes``);
drawdown >= drawdown_reduce_usd -> REDUCING, back to ACTIVE once drawdown is
below the soft threshold again (the latch survives a daily-loss halt and a new
day). One equity peak: ``GovernorState.peak_equity_usd``; the engine reads it.

Every verdict in which a limit acted counts once per reason code in
:attr:`Governor.denials` (clips and denials both; exported as
``quantramp_governor_denials_total{reason}``). :meth:`Governor.on_fill` audits
each execution independently of the checks; a fill that breaks a hard limit
(more than was accepted, new risk while HALTED/REDUCING, position above its cap
beyond the collar) is counted in :attr:`Governor.hard_limit_breaches`, which
must stay 0.

Everything that must survive a restart is in one :class:`GovernorState`
(``to_dict`` / ``from_dict`` are JSON-able).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from enum import Enum, IntEnum
from typing import Mapping


class Reason(str, Enum):
    """Reason codes of governor actions (stable strings for logs and metric labels)."""

    INVALID_PRICE = "invalid_price"
    INVALID_INPUT = "invalid_input"
    STALE_PRICE = "stale_price"
    TRADING_HALTED = "trading_halted"
    TRADING_REDUCING = "trading_reducing"
    DAILY_LOSS_LIMIT = "daily_loss_limit"
    DRAWDOWN_HALT = "drawdown_halt"
    DRAWDOWN_REDUCE = "drawdown_reduce"
    MANUAL_HALT = "manual_halt"
    DRAWDOWN_SOFT = "drawdown_soft"
    MAX_POSITION = "max_position"
    MAX_GROSS_POSITION = "max_gross_position"
    CAPITAL_FRACTION = "capital_fraction"
    MAX_ORDER = "max_order"
    MAX_DAILY_TURNOVER = "max_daily_turnover"
    PRICE_COLLAR = "price_collar"
    ORDER_THROTTLE = "order_throttle"
    DUPLICATE_ORDER = "duplicate_order"


class TradingState(IntEnum):
    """Trading state (value exported as ``quantramp_trading_state``)."""

    ACTIVE = 0
    REDUCING = 1
    HALTED = 2


ACTIVE, REDUCING, HALTED = 0, 1, 2

# -- defaults ----------------------------------------------------------------------
#: Seed runbook hard limits (absolute USD, for its $1,000 reference pod). config/risk-limits.yaml
#: holds the same figures; :func:`seed_limits` scales them to another capital.
SEED_REFERENCE_CAPITAL_USD = 1_000.0
SEED_LIMITS_USD = {
    "max_daily_loss_usd": 100.0,
    "max_position_usd": 500.0,
    "max_daily_turnover_usd": 2_000.0,
    "max_order_usd": 50.0,
    "drawdown_soft_usd": 20.0,
}

#: Defaults as fractions of the pod's capital (QR_CAPITAL_USD), used for every limit the
#: environment does not give. Where the seed runbook figure suits a one-order-per-bar intraday
#: strategy it is kept (position 50%, drawdown soft 2% = "-$20 on $1,000 halves size"); the
#: daily loss stays at the tighter 2%; max order is a whole position flip (the seed's $50 = 5%
#: would split every entry into 10 orders paying 10 minimum commissions); daily turnover is 50x
#: capital, a runaway-churn breaker (the seed's 2x would stop this strategy after two round
#: trips: the sound demo model turns over up to 24x its capital on the busiest replay day, and
#: at 30x the churning demo model is throttled before its losses show). config/risk-limits.yaml
#: mirrors these (a unit test keeps them equal).
DEFAULT_FRACTIONS = {
    "max_order_usd": 1.0,
    "max_position_usd": 0.5,
    "max_daily_loss_usd": 0.02,
    "max_gross_position_usd": 1.0,
    "max_daily_turnover_usd": 50.0,
    "drawdown_soft_usd": 0.02,
    "drawdown_reduce_usd": 0.03,
    "drawdown_halt_usd": 0.05,
}
DEFAULT_DRAWDOWN_SIZE_FACTOR = 0.5
DEFAULT_PRICE_COLLAR_RATIO = 0.02
DEFAULT_MAX_ORDERS_PER_WINDOW = 10
DEFAULT_THROTTLE_WINDOW_S = 60.0
DEFAULT_DUPLICATE_WINDOW_S = 1.0
DEFAULT_MAX_PRICE_AGE_S = 90.0
DEFAULT_MAX_CAPITAL_FRACTION = 1.0

#: environment variable of each limit (the operator passes the first three today)
ENV_VARS = {
    "max_position_usd": "QR_MAX_POSITION_USD",
    "max_order_usd": "QR_MAX_ORDER_USD",
    "max_daily_loss_usd": "QR_MAX_DAILY_LOSS_USD",
    "max_gross_position_usd": "QR_MAX_GROSS_POSITION_USD",
    "max_daily_turnover_usd": "QR_MAX_DAILY_TURNOVER_USD",
    "drawdown_soft_usd": "QR_DRAWDOWN_SOFT_USD",
    "drawdown_reduce_usd": "QR_DRAWDOWN_REDUCE_USD",
    "drawdown_halt_usd": "QR_DRAWDOWN_HALT_USD",
    "drawdown_size_factor": "QR_DRAWDOWN_SIZE_FACTOR",
    "price_collar_ratio": "QR_PRICE_COLLAR_RATIO",
    "max_orders_per_window": "QR_MAX_ORDERS_PER_WINDOW",
    "throttle_window_s": "QR_THROTTLE_WINDOW_SECONDS",
    "duplicate_window_s": "QR_DUPLICATE_WINDOW_SECONDS",
    "max_price_age_s": "QR_MAX_PRICE_AGE_SECONDS",
    "max_capital_fraction": "QR_MAX_CAPITAL_FRACTION",
}
#: QR_RISK_PROFILE=seed: start from the seed runbook figures scaled to the capital
PROFILE_ENV = "QR_RISK_PROFILE"

_NS = 1_000_000_000
_FAR_PAST = -(1 << 62)


def _positive(name: str, v) -> None:
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Pre-trade limits (USD unless named otherwise).

    The first three are required (the operator passes them as QR_MAX_ORDER_USD,
    QR_MAX_POSITION_USD, QR_MAX_DAILY_LOSS_USD). Every other USD limit left as
    None is derived from the pod's capital by :meth:`resolved` (see
    :data:`DEFAULT_FRACTIONS`); ``capital_usd`` is the capital of the current stage.
    """

    max_order_usd: float
    max_position_usd: float
    max_daily_loss_usd: float
    max_gross_position_usd: float | None = None
    max_daily_turnover_usd: float | None = None
    drawdown_soft_usd: float | None = None
    drawdown_reduce_usd: float | None = None
    drawdown_halt_usd: float | None = None
    drawdown_size_factor: float = DEFAULT_DRAWDOWN_SIZE_FACTOR
    price_collar_ratio: float = DEFAULT_PRICE_COLLAR_RATIO
    max_orders_per_window: int = DEFAULT_MAX_ORDERS_PER_WINDOW
    throttle_window_s: float = DEFAULT_THROTTLE_WINDOW_S
    duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S
    max_price_age_s: float = DEFAULT_MAX_PRICE_AGE_S
    max_capital_fraction: float = DEFAULT_MAX_CAPITAL_FRACTION
    capital_usd: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and f.default is None:
                continue
            _positive(f.name, v)
        if not self.drawdown_size_factor <= 1.0:
            raise ValueError(f"drawdown_size_factor must be in (0, 1], got {self.drawdown_size_factor}")
        if int(self.max_orders_per_window) != self.max_orders_per_window:
            raise ValueError("max_orders_per_window must be a whole number")
        dd = [v for v in (self.drawdown_soft_usd, self.drawdown_reduce_usd, self.drawdown_halt_usd) if v is not None]
        if dd != sorted(dd):
            raise ValueError("drawdown thresholds must satisfy soft <= reduce <= halt")

    @property
    def complete(self) -> bool:
        """True when every limit has a value (see :meth:`resolved`)."""
        return all(getattr(self, f.name) is not None for f in fields(self))

    def resolved(self, capital_usd: float) -> "RiskLimits":
        """These limits with every missing one derived from ``capital_usd`` (the stage's capital)."""
        _positive("capital_usd", capital_usd)
        kw = {}
        for name in ("max_gross_position_usd", "max_daily_turnover_usd"):
            if getattr(self, name) is None:
                kw[name] = DEFAULT_FRACTIONS[name] * capital_usd
        # drawdown thresholds default to capital fractions, kept ordered around any given one
        soft, red, halt = self.drawdown_soft_usd, self.drawdown_reduce_usd, self.drawdown_halt_usd
        if soft is None:
            soft = DEFAULT_FRACTIONS["drawdown_soft_usd"] * capital_usd
            if red is not None:
                soft = min(soft, red)
            if halt is not None:
                soft = min(soft, halt)
        if red is None:
            red = max(soft, DEFAULT_FRACTIONS["drawdown_reduce_usd"] * capital_usd)
            if halt is not None:
                red = min(red, halt)
        if halt is None:
            halt = max(red, DEFAULT_FRACTIONS["drawdown_halt_usd"] * capital_usd)
        kw.update(drawdown_soft_usd=soft, drawdown_reduce_usd=red, drawdown_halt_usd=halt)
        if self.capital_usd is None:
            kw["capital_usd"] = capital_usd
        return replace(self, **kw)


def default_limits(capital_usd: float) -> RiskLimits:
    """Every limit at its capital-proportional default (:data:`DEFAULT_FRACTIONS`)."""
    _positive("capital_usd", capital_usd)
    f = DEFAULT_FRACTIONS
    return RiskLimits(
        max_order_usd=f["max_order_usd"] * capital_usd,
        max_position_usd=f["max_position_usd"] * capital_usd,
        max_daily_loss_usd=f["max_daily_loss_usd"] * capital_usd,
    ).resolved(capital_usd)


#: seed profile: the drawdown HALT level as a multiple of the daily loss limit. The runbook
#: gives no drawdown halt; the capital default (5 %) would put it at $50 on the $1,000 pod,
#: below the $100 daily-loss stop, which then could never fire (drawdown >= -day P&L always
#: holds) and one bad day would halt the pod for good (review D1). Two full daily-loss stops
#: make the multi-day stop; the REDUCING level keeps its default (3 % of capital).
SEED_DRAWDOWN_HALT_DAILY_LOSSES = 2.0


def seed_limits(capital_usd: float = SEED_REFERENCE_CAPITAL_USD) -> RiskLimits:
    """The seed runbook's hard limits ($100 daily loss, $500 position, $2,000 daily turnover,
    $50 single trade, -$20 drawdown halves size) scaled linearly from its $1,000 reference pod
    to ``capital_usd`` (every USD figure x capital_usd / 1,000). Drawdown HALT at
    :data:`SEED_DRAWDOWN_HALT_DAILY_LOSSES` x the daily loss (so the daily-loss stop fires
    first); REDUCING and the rest take the capital defaults. Raises ValueError on a
    non-positive capital."""
    _positive("capital_usd", capital_usd)
    k = capital_usd / SEED_REFERENCE_CAPITAL_USD
    s = {name: v * k for name, v in SEED_LIMITS_USD.items()}
    s["drawdown_halt_usd"] = SEED_DRAWDOWN_HALT_DAILY_LOSSES * s["max_daily_loss_usd"]
    return RiskLimits(**s).resolved(capital_usd)


#: the price collar of bars longer than a minute: at most this (daily bars: a one-day move; the SEC's
#: Limit Up-Limit Down bands are 5 % for Tier 1 and 10 % for Tier 2 stocks over five minutes)
MAX_SCALED_PRICE_COLLAR_RATIO = 0.10
#: daily bars: a decision on a session's close may use that close for this long after it (seconds)
DAILY_MAX_PRICE_AGE_S = 4 * 3600.0


def bar_length_defaults(bar_seconds: int) -> dict[str, float]:
    """The defaults of the limits that depend on the bar length, for bars of ``bar_seconds`` (60: minute bars,
    86400: daily bars, one per session):

    * ``price_collar_ratio``: :data:`DEFAULT_PRICE_COLLAR_RATIO` (2 %) for minute bars, times
      sqrt(bar_seconds / 60) (price moves grow with the square root of time), at most
      :data:`MAX_SCALED_PRICE_COLLAR_RATIO` (10 %): 4.5 % for 5-minute bars, 10 % for 30-minute and longer.
      With the minute collar a daily strategy was denied its entries after any day that moved 2 %;
    * ``max_price_age_s``: 1.5 bars intraday (:data:`DEFAULT_MAX_PRICE_AGE_S`, 90 s, for minute bars);
      daily bars :data:`DAILY_MAX_PRICE_AGE_S` (4 h) after the session's close.

    Raises ValueError for a non-positive bar length."""
    if bar_seconds <= 0:
        raise ValueError(f"bar_seconds must be > 0, got {bar_seconds}")
    collar = min(MAX_SCALED_PRICE_COLLAR_RATIO, DEFAULT_PRICE_COLLAR_RATIO * math.sqrt(max(1.0, bar_seconds / 60.0)))
    age = DAILY_MAX_PRICE_AGE_S if bar_seconds >= 86_400 else max(DEFAULT_MAX_PRICE_AGE_S, 1.5 * bar_seconds)
    return {"price_collar_ratio": collar, "max_price_age_s": age}


def limits_from_env(env: Mapping[str, str], capital_usd: float, bar_seconds: int = 60) -> RiskLimits:
    """Limits from the QR_* environment (:data:`ENV_VARS`), defaults proportional to ``capital_usd``
    and, for the collar and the price age, scaled to bars of ``bar_seconds`` (:func:`bar_length_defaults`).

    ``QR_RISK_PROFILE=seed`` starts from :func:`seed_limits` instead of
    :func:`default_limits`. Raises ValueError naming every bad variable.
    """
    profile = env.get(PROFILE_ENV, "").strip().lower() or "capital"
    if profile not in ("capital", "seed"):
        raise ValueError(f"{PROFILE_ENV}={profile!r} must be capital or seed")
    base = seed_limits(capital_usd) if profile == "seed" else default_limits(capital_usd)
    base = replace(base, **bar_length_defaults(bar_seconds))
    given: dict[str, float] = {}
    errors = []
    for name, var in ENV_VARS.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            v = float(raw)
        except ValueError:
            errors.append(f"{var}={raw!r} is not a number")
            continue
        if not (math.isfinite(v) and v > 0):
            errors.append(f"{var}={raw!r} must be > 0")
            continue
        given[name] = int(v) if name == "max_orders_per_window" else v
    if errors:
        raise ValueError("; ".join(errors))
    # derived drawdown levels follow a given soft level when reduce/halt are not given
    dd = {k: given.get(k) for k in ("drawdown_soft_usd", "drawdown_reduce_usd", "drawdown_halt_usd")}
    partial = replace(base, drawdown_soft_usd=None, drawdown_reduce_usd=None, drawdown_halt_usd=None,
                      capital_usd=None, **{k: v for k, v in given.items() if k not in dd})
    if all(v is None for v in dd.values()):
        dd = {"drawdown_soft_usd": base.drawdown_soft_usd, "drawdown_reduce_usd": base.drawdown_reduce_usd,
              "drawdown_halt_usd": base.drawdown_halt_usd}
    return replace(partial, **dd).resolved(capital_usd)


def limits_from_environ(capital_usd: float) -> RiskLimits:
    """:func:`limits_from_env` on ``os.environ``."""
    return limits_from_env(os.environ, capital_usd)


# -- state ---------------------------------------------------------------------------
@dataclass(slots=True)
class GovernorState:
    """Everything the governor must carry over a restart (serialise with :meth:`to_dict`).

    trading_date: ISO New York date the day counters belong to. trading_state:
    0 ACTIVE / 1 REDUCING / 2 HALTED. halt_reason: the Reason value that set a
    non-ACTIVE state ("" when ACTIVE). equity_usd / peak_equity_usd: last marked
    equity and its peak (drawdown = peak - equity). day_pnl_usd: P&L of the
    trading day. turnover_usd: notional traded today. throttle_ns: ring of the
    times (ns) of the last accepted orders, throttle_idx its next slot.
    last_order_*: the last accepted order (duplicate check). notional_usd:
    signed notional per symbol at its last mark. accepted: orders accepted.
    Latches (see :meth:`Governor._evaluate`): daily_loss_date (the trading date
    whose daily-loss stop fired, None if none), drawdown_halted,
    reducing_latched, manual_halt / manual_reduce (the cause, "" if not set).
    resumes: the records of :meth:`Governor.resume` (who, why, when, state before).
    halts: how many times the state entered HALTED, by cause (a halt of one daily bar lasts less
    than a scrape: the count, exported, is what shows it).
    """

    trading_date: str = ""
    trading_state: int = ACTIVE
    halt_reason: str = ""
    equity_usd: float = float("nan")
    peak_equity_usd: float = float("nan")
    day_pnl_usd: float = 0.0
    turnover_usd: float = 0.0
    throttle_ns: list[int] = field(default_factory=list)
    throttle_idx: int = 0
    last_order_symbol: str = ""
    last_order_qty: int = 0
    last_order_ns: int = _FAR_PAST
    notional_usd: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    daily_loss_date: str | None = None
    drawdown_halted: bool = False
    reducing_latched: bool = False
    manual_halt: str = ""
    manual_reduce: str = ""
    resumes: list[dict] = field(default_factory=list)
    halts: dict[str, int] = field(default_factory=dict)

    @property
    def drawdown_usd(self) -> float:
        """peak equity - equity (0 before the first mark)."""
        d = self.peak_equity_usd - self.equity_usd
        return d if d > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-able dict (floats, ints, strings, lists); the throttle ring in time order."""
        ring = self.throttle_ns
        n = len(ring)
        ordered = [ring[(self.throttle_idx + i) % n] for i in range(n)] if n else []
        return {
            "trading_date": self.trading_date,
            "trading_state": int(self.trading_state),
            "halt_reason": self.halt_reason,
            "equity_usd": None if math.isnan(self.equity_usd) else self.equity_usd,
            "peak_equity_usd": None if math.isnan(self.peak_equity_usd) else self.peak_equity_usd,
            "day_pnl_usd": self.day_pnl_usd,
            "turnover_usd": self.turnover_usd,
            "throttle_ns": [t for t in ordered if t != _FAR_PAST],
            "last_order_symbol": self.last_order_symbol,
            "last_order_qty": self.last_order_qty,
            "last_order_ns": self.last_order_ns,
            "notional_usd": dict(self.notional_usd),
            "accepted": self.accepted,
            "daily_loss_date": self.daily_loss_date,
            "drawdown_halted": self.drawdown_halted,
            "reducing_latched": self.reducing_latched,
            "manual_halt": self.manual_halt,
            "manual_reduce": self.manual_reduce,
            "resumes": [dict(r) for r in self.resumes],
            "halts": dict(self.halts),
        }

    @staticmethod
    def from_dict(d: Mapping) -> "GovernorState":
        """Inverse of :meth:`to_dict` (unknown keys are ignored, missing ones take defaults)."""
        st = GovernorState()
        for k in ("trading_date", "halt_reason", "last_order_symbol"):
            if k in d:
                setattr(st, k, str(d[k]))
        for k in ("trading_state", "last_order_qty", "last_order_ns", "accepted"):
            if k in d and d[k] is not None:
                setattr(st, k, int(d[k]))
        for k in ("equity_usd", "peak_equity_usd", "day_pnl_usd", "turnover_usd"):
            if k in d:
                setattr(st, k, float("nan") if d[k] is None else float(d[k]))
        if st.trading_state not in (ACTIVE, REDUCING, HALTED):
            raise ValueError(f"trading_state must be 0, 1 or 2, got {st.trading_state}")
        st.throttle_ns = [int(t) for t in d.get("throttle_ns", ())]
        st.throttle_idx = 0
        st.notional_usd = {str(k): float(v) for k, v in dict(d.get("notional_usd", {})).items()}
        st.halts = {str(k): int(v) for k, v in dict(d.get("halts", {})).items()}
        if "drawdown_halted" in d:
            st.daily_loss_date = None if d.get("daily_loss_date") is None else str(d["daily_loss_date"])
            st.drawdown_halted = bool(d["drawdown_halted"])
            st.reducing_latched = bool(d.get("reducing_latched", False))
            st.manual_halt = str(d.get("manual_halt", ""))
            st.manual_reduce = str(d.get("manual_reduce", ""))
            st.resumes = [dict(r) for r in d.get("resumes", ())]
        else:  # a state saved before the latches existed: derive them from the state and its cause
            r = st.halt_reason
            if st.trading_state == HALTED:
                if r == Reason.DAILY_LOSS_LIMIT.value:
                    st.daily_loss_date = st.trading_date
                elif r == Reason.DRAWDOWN_HALT.value:
                    st.drawdown_halted = True
                else:
                    st.manual_halt = r or Reason.MANUAL_HALT.value
            elif st.trading_state == REDUCING:
                if r == Reason.DRAWDOWN_REDUCE.value:
                    st.reducing_latched = True
                else:
                    st.manual_reduce = r or Reason.MANUAL_HALT.value
        return st


@dataclass(slots=True)
class Verdict:
    """Governor outcome.

    order_qty: signed shares that may be sent (0 = nothing). reasons: codes of
    the limits that acted, in check order. denied: a non-zero order was wanted
    and none may be sent. closing: the order only reduces |position| toward
    flat (an end-of-day or halt flatten is one). state: the trading state the
    check ran in (0/1/2).
    """

    order_qty: int
    reasons: tuple[Reason, ...]
    denied: bool
    closing: bool = False
    state: int = ACTIVE

    @property
    def clipped(self) -> bool:
        """True if a limit reduced the order but some of it may be sent."""
        return bool(self.reasons) and not self.denied


# module-level aliases: one global lookup instead of an Enum attribute lookup per use
_R_PRICE = Reason.INVALID_PRICE
_R_INPUT = Reason.INVALID_INPUT
_R_STALE = Reason.STALE_PRICE
_R_HALTED = Reason.TRADING_HALTED
_R_REDUCING = Reason.TRADING_REDUCING
_R_SOFT = Reason.DRAWDOWN_SOFT
_R_POS = Reason.MAX_POSITION
_R_GROSS = Reason.MAX_GROSS_POSITION
_R_CAPITAL = Reason.CAPITAL_FRACTION
_R_ORDER = Reason.MAX_ORDER
_R_TURNOVER = Reason.MAX_DAILY_TURNOVER
_R_COLLAR = Reason.PRICE_COLLAR
_R_THROTTLE = Reason.ORDER_THROTTLE
_R_DUP = Reason.DUPLICATE_ORDER
_EMPTY: tuple = ()
_CAUSES = {r.value: r for r in (Reason.DAILY_LOSS_LIMIT, Reason.DRAWDOWN_HALT, Reason.MANUAL_HALT,
                                  Reason.DRAWDOWN_REDUCE)}
_V_DD_HALT = Reason.DRAWDOWN_HALT.value
_V_DAILY_LOSS = Reason.DAILY_LOSS_LIMIT.value
_V_DD_REDUCE = Reason.DRAWDOWN_REDUCE.value
#: how many resume records the governor state keeps (oldest dropped first)
MAX_RESUME_RECORDS = 50
_isfinite = math.isfinite
_floor = math.floor


def _shares(usd: float, price: float) -> int:
    """Whole shares of ``usd`` notional at ``price`` (toward zero, never negative)."""
    return int(_floor(usd / price)) if usd > 0 else 0


class Governor:
    """The pre-trade governor of one trader (all symbols of one strategy role).

    ``limits`` must be complete (see :meth:`RiskLimits.resolved`); ``state``
    defaults to a fresh one whose peak equity is the capital.
    """

    __slots__ = (
        "limits", "state", "denials", "hard_limit_breaches", "_max_order", "_max_pos", "_max_gross",
        "_max_capital", "_max_turnover", "_collar", "_window_ns", "_dup_ns", "_age_ns", "_size_factor",
        "_dd_soft", "_dd_reduce", "_dd_halt", "_max_loss", "_exempt_reducing", "_ring_n", "_last_accepted", "_state_changes",
    )

    def __init__(self, limits: RiskLimits, state: GovernorState | None = None) -> None:
        if not limits.complete:
            raise ValueError("governor limits must be complete: call RiskLimits.resolved(capital_usd) first")
        self.limits = limits
        self.state = state if state is not None else GovernorState()
        st = self.state
        if math.isnan(st.peak_equity_usd):
            st.peak_equity_usd = limits.capital_usd
        if math.isnan(st.equity_usd):
            st.equity_usd = st.peak_equity_usd
        self._max_order = limits.max_order_usd
        self._max_pos = limits.max_position_usd
        self._max_gross = limits.max_gross_position_usd
        self._max_capital = limits.capital_usd * limits.max_capital_fraction
        self._max_turnover = limits.max_daily_turnover_usd
        self._collar = limits.price_collar_ratio
        self._window_ns = int(limits.throttle_window_s * _NS)
        self._dup_ns = int(limits.duplicate_window_s * _NS)
        self._age_ns = int(limits.max_price_age_s * _NS)
        self._size_factor = limits.drawdown_size_factor
        self._dd_soft = limits.drawdown_soft_usd
        self._dd_reduce = limits.drawdown_reduce_usd
        self._dd_halt = limits.drawdown_halt_usd
        self._max_loss = limits.max_daily_loss_usd
        #: reduce-only orders skip the controls meant for risk-adding ones (a control of its own:
        #: the certification switches it off and expects a crash flatten to be held back)
        self._exempt_reducing = True
        n = int(limits.max_orders_per_window)
        self._ring_n = n
        # normalise the throttle ring to n slots, oldest first (restored states carry a list)
        recent = [t for t in st.throttle_ns if t != _FAR_PAST][-n:]
        st.throttle_ns = [_FAR_PAST] * (n - len(recent)) + recent
        st.throttle_idx = 0
        self.denials: dict[str, int] = {r.value: 0 for r in Reason}
        self.hard_limit_breaches = 0
        self._last_accepted = 0
        self._state_changes = 0

    # -- state ---------------------------------------------------------------------
    @property
    def trading_state(self) -> TradingState:
        """Current trading state."""
        return TradingState(self.state.trading_state)

    @property
    def size_factor(self) -> float:
        """Sizing multiplier now: drawdown_size_factor at or beyond the soft drawdown, else 1."""
        return self._size_factor if self.state.drawdown_usd >= self._dd_soft else 1.0

    def _set(self, state: int, reason: str) -> None:
        st = self.state
        if st.trading_state != state or st.halt_reason != reason:
            if state == HALTED:
                st.halts[reason] = st.halts.get(reason, 0) + 1
            st.trading_state = state
            st.halt_reason = reason
            self._state_changes += 1

    def halt(self, reason: str = Reason.MANUAL_HALT.value) -> None:
        """HALTED until :meth:`resume` (kill switch, on-call); ``reason`` is the recorded cause."""
        self.state.manual_halt = reason or Reason.MANUAL_HALT.value
        self._evaluate()

    def reduce_only(self, reason: str = Reason.MANUAL_HALT.value) -> None:
        """REDUCING until :meth:`resume` (a HALTED state stays HALTED)."""
        self.state.manual_reduce = reason or Reason.MANUAL_HALT.value
        self._evaluate()

    def resume(self, by: str = "", reason: str = "", at: str = "") -> dict:
        """The explicit, recorded action that lifts a manual halt, a manual reduce-only and a
        drawdown halt (nothing else does). Returns the record, also appended to
        ``state.resumes`` (the last :data:`MAX_RESUME_RECORDS`; persisted with the state).

        ``by``: who resumed (operator, on-call name); ``reason``: why; ``at``: when (ISO
        time, the caller's clock). A drawdown halt is resumed by accepting the loss: the
        equity peak is re-based to the current equity (the record keeps the old peak), so
        the drawdown ladder starts again from here. The daily-loss halt is *not* lifted:
        it holds until the next trading day whatever is resumed (seed runbook: the daily
        loss is a hard stop for the day).
        """
        st = self.state
        record = {
            "by": by, "reason": reason, "at": at, "trading_state": int(st.trading_state),
            "halt_reason": st.halt_reason, "peak_equity_usd": st.peak_equity_usd, "equity_usd": st.equity_usd,
        }
        if st.drawdown_halted or st.reducing_latched:
            if _isfinite(st.equity_usd):
                st.peak_equity_usd = st.equity_usd
        st.drawdown_halted = False
        st.reducing_latched = False
        st.manual_halt = ""
        st.manual_reduce = ""
        self._evaluate()
        record["trading_state_after"] = int(st.trading_state)
        st.resumes.append(record)
        del st.resumes[:-MAX_RESUME_RECORDS]
        return record

    def new_day(self, trading_date: str) -> None:
        """Start trading date ``trading_date`` (ISO YYYY-MM-DD): day P&L and turnover to 0, the
        daily-loss halt of an earlier day lifted. A date not later than the current one is
        ignored (an out-of-order bar never re-opens a day or resets its counters)."""
        st = self.state
        if trading_date <= st.trading_date:
            return
        st.trading_date = trading_date
        st.day_pnl_usd = 0.0
        st.turnover_usd = 0.0
        self._evaluate()

    def mark(self, symbol: str, position_qty: int, price: float, equity_usd: float, day_pnl_usd: float) -> int:
        """New price of ``symbol``: update notional, equity, peak, day P&L and the trading state.

        Non-finite inputs leave the previous marks in place (the check fails
        closed on a bad price anyway). The caller passes validated prices only
        (the engine refuses bad prints before they reach a mark, see
        :meth:`.engine.Engine.step`). Returns the trading state (0/1/2).
        """
        st = self.state
        if _isfinite(price) and price > 0:
            st.notional_usd[symbol] = position_qty * price
        if _isfinite(equity_usd):
            st.equity_usd = equity_usd
            if equity_usd > st.peak_equity_usd:
                st.peak_equity_usd = equity_usd
        if _isfinite(day_pnl_usd):
            st.day_pnl_usd = day_pnl_usd
        self._evaluate()
        return st.trading_state

    def rebase_capital(self, delta_usd: float) -> None:
        """The stage's capital changed by ``delta_usd`` (USD, restart with a new capital): move
        equity and its peak by the same amount, so the drawdown in USD is unchanged."""
        st = self.state
        if _isfinite(delta_usd):
            st.peak_equity_usd += delta_usd
            st.equity_usd += delta_usd
        self._evaluate()

    def _evaluate(self) -> None:
        """Update the latches from drawdown and day P&L, then derive the state from them.

        Latches: drawdown halt (dd >= halt; until :meth:`resume`), daily loss (day P&L <=
        -limit; for that trading date only), drawdown REDUCING (dd >= reduce; until dd <
        soft, across days), manual halt / reduce-only (until :meth:`resume`). State:
        HALTED if any halt latch is set (cause, in this order: drawdown_halt,
        daily_loss_limit, the manual cause), else REDUCING if a reduce latch is set, else
        ACTIVE.
        """
        st = self.state
        dd = st.drawdown_usd
        if dd >= self._dd_halt:
            st.drawdown_halted = True
        if st.day_pnl_usd <= -self._max_loss:
            st.daily_loss_date = st.trading_date
        if dd >= self._dd_reduce:
            st.reducing_latched = True
        elif dd < self._dd_soft:
            st.reducing_latched = False
        if st.drawdown_halted:
            self._set(HALTED, _V_DD_HALT)
        elif st.daily_loss_date == st.trading_date:
            self._set(HALTED, _V_DAILY_LOSS)
        elif st.manual_halt:
            self._set(HALTED, st.manual_halt)
        elif st.reducing_latched:
            self._set(REDUCING, _V_DD_REDUCE)
        elif st.manual_reduce:
            self._set(REDUCING, st.manual_reduce)
        else:
            self._set(ACTIVE, "")

    # -- the check ----------------------------------------------------------------
    def check(
        self,
        symbol: str,
        target_qty: int,
        position_qty: int,
        price: float,
        last_price: float,
        now_ns: int,
        price_ts_ns: int,
    ) -> Verdict:
        """Decide the order for moving ``symbol`` from ``position_qty`` to ``target_qty`` shares.

        ``price``: the order's reference (or limit) price, USD; ``last_price``:
        the last trade price before it (collar reference); ``now_ns`` /
        ``price_ts_ns``: market time now and the price's time, ns. Checks in the
        order of the module docstring; the verdict is counted and, when an order
        is accepted, the throttle and duplicate windows are updated.
        """
        # 1-3: fail closed on the inputs
        if not (price > 0 and price < math.inf):  # False for NaN too
            return self._deny(_R_PRICE, position_qty, target_qty)
        if (
            type(target_qty) is not int
            or type(position_qty) is not int
            or type(now_ns) is not int
            or type(price_ts_ns) is not int
        ):
            if not _whole(target_qty) or not _whole(position_qty) or not _whole(now_ns) or not _whole(price_ts_ns):
                return self._deny(_R_INPUT, position_qty, target_qty)
            target_qty, position_qty, now_ns, price_ts_ns = int(target_qty), int(position_qty), int(now_ns), int(price_ts_ns)
        age = now_ns - price_ts_ns
        if age > self._age_ns or age < 0:
            return self._deny(_R_STALE, position_qty, target_qty)
        pos = position_qty
        target = target_qty
        if target == pos:
            return Verdict(0, _EMPTY, False, False, self.state.trading_state)

        st = self.state
        state = st.trading_state
        reasons = _EMPTY
        # 4-5: trading state
        if state == HALTED:
            if target != 0:
                cause = _CAUSES.get(st.halt_reason)
                return self._deny_many((_R_HALTED, cause) if cause else (_R_HALTED,))
        elif state == REDUCING:
            if pos == 0 or target * pos < 0:
                reduced = 0
            elif abs(target) > abs(pos):
                reduced = pos
            else:
                reduced = target
            if reduced != target:
                reasons = (_R_REDUCING,)
                target = reduced
        reducing = target == 0 or (target * pos > 0 and abs(target) <= abs(pos))
        if not reducing:
            # 6: graded drawdown sizing of new exposure
            if st.peak_equity_usd - st.equity_usd >= self._dd_soft:
                scaled = int(target * self._size_factor)  # toward zero
                if scaled * pos > 0 and abs(scaled) < abs(pos):
                    scaled = pos  # never forced down, just not grown
                if scaled != target:
                    reasons += (_R_SOFT,)
                    target = scaled
            # 7: per-symbol position cap
            if abs(target) * price > self._max_pos:
                allowed = _shares(self._max_pos, price)
                if target * pos > 0 and abs(pos) > allowed:
                    allowed = min(abs(target), abs(pos))
                new = allowed if target > 0 else -allowed
                if new != target:
                    reasons += (_R_POS,)
                    target = new
            # 8-9: gross across symbols, capital fraction of the stage
            other = 0.0
            for s, v in st.notional_usd.items():
                if s != symbol:
                    other += v if v > 0 else -v
            if other + abs(target) * price > self._max_gross:
                new = self._clip_gross(target, pos, price, self._max_gross - other)
                if new != target:
                    reasons += (_R_GROSS,)
                    target = new
            if other + abs(target) * price > self._max_capital:
                new = self._clip_gross(target, pos, price, self._max_capital - other)
                if new != target:
                    reasons += (_R_CAPITAL,)
                    target = new
            reducing = target == 0 or (target * pos > 0 and abs(target) <= abs(pos))
        order = target - pos
        if reducing and self._exempt_reducing:
            return self._accept_reducing(symbol, order, pos, now_ns, reasons, state)
        # 10: single order notional
        notional = abs(order) * price
        if notional > self._max_order:
            n = _shares(self._max_order, price)
            order = n if order > 0 else -n
            reasons += (_R_ORDER,)
            notional = n * price
        # 11: daily turnover, for orders that add risk
        if order and st.turnover_usd + notional > self._max_turnover:
            n = _shares(self._max_turnover - st.turnover_usd, price)
            if n < abs(order):
                # a smaller order must still not open beyond what the budget allows
                order = n if order > 0 else -n
                reasons += (_R_TURNOVER,)
        if order == 0:
            return self._finish(0, reasons, True, False, state)
        # 12: price collar against the last trade
        if not (last_price > 0 and last_price < math.inf) or abs(price - last_price) > self._collar * last_price:
            return self._finish(0, reasons + (_R_COLLAR,), True, False, state)
        # 13: order-rate throttle over the rolling window
        ring = st.throttle_ns
        idx = st.throttle_idx
        if ring[idx] > now_ns - self._window_ns:
            return self._finish(0, reasons + (_R_THROTTLE,), True, False, state)
        # 14: duplicate of the last accepted order
        if (
            order == st.last_order_qty
            and now_ns - st.last_order_ns < self._dup_ns
            and symbol == st.last_order_symbol
        ):
            return self._finish(0, reasons + (_R_DUP,), True, False, state)
        self._record_accept(symbol, order, now_ns)
        new_pos = pos + order
        closing = abs(new_pos) < abs(pos) and new_pos * pos >= 0
        if reasons:
            return self._finish(order, reasons, False, closing, state)
        return Verdict(order, _EMPTY, False, closing, state)

    def _accept_reducing(self, symbol: str, order: int, pos: int, now_ns: int, reasons: tuple, state: int) -> Verdict:
        """A reduce-only order (toward flat, never through it): only the duplicate check applies.

        The order cap, the turnover cap, the price collar and the throttle exist to stop
        orders that add risk (SEC 15c3-5 credit/capital and erroneous-order controls, FIA
        "risk-reducing orders" guidance); applied to a flatten they keep a position on in a
        crash (review D5: a -2.5 %/bar slide into the close was carried overnight at 5.3x the
        daily-loss limit). The order is bounded by the position, which the position cap bounds.
        It still counts toward the throttle window and the turnover (on the fill).
        """
        st = self.state
        if order == 0:
            return self._finish(0, reasons, True, False, state)
        if order == st.last_order_qty and now_ns - st.last_order_ns < self._dup_ns and symbol == st.last_order_symbol:
            return self._finish(0, reasons + (_R_DUP,), True, False, state)
        self._record_accept(symbol, order, now_ns)
        return self._finish(order, reasons, False, True, state)

    def _record_accept(self, symbol: str, order: int, now_ns: int) -> None:
        """Book an accepted order: its slot in the throttle ring, the duplicate check's last order, the count."""
        st = self.state
        idx = st.throttle_idx
        st.throttle_ns[idx] = now_ns
        idx += 1
        st.throttle_idx = 0 if idx == self._ring_n else idx
        st.last_order_symbol = symbol
        st.last_order_qty = order
        st.last_order_ns = now_ns
        st.accepted += 1
        self._last_accepted = order

    @staticmethod
    def _clip_gross(target: int, pos: int, price: float, room_usd: float) -> int:
        allowed = _shares(room_usd, price)
        if target * pos > 0 and abs(pos) > allowed:
            allowed = min(abs(target), abs(pos))  # keep, never grow
        if allowed >= abs(target):
            return target
        return allowed if target > 0 else -allowed

    def _count(self, reasons: tuple) -> None:
        d = self.denials
        for r in reasons:
            d[r.value] += 1

    def _finish(self, order: int, reasons: tuple, denied: bool, closing: bool, state: int) -> Verdict:
        if reasons:
            self._count(reasons)
        return Verdict(order, reasons, denied, closing, state)

    def _deny(self, reason: Reason, pos, target) -> Verdict:
        self.denials[reason.value] += 1
        return Verdict(0, (reason,), pos != target, False, self.state.trading_state)

    def _deny_many(self, reasons: tuple) -> Verdict:
        self._count(reasons)
        return Verdict(0, reasons, True, False, self.state.trading_state)

    # -- after the fact -------------------------------------------------------------
    def on_fill(self, symbol: str, filled_qty: int, price: float, position_before: int, ordered_qty: int) -> bool:
        """Book an execution: add its notional to today's turnover and audit it.

        Returns True (and counts a hard-limit breach) if the fill broke a hard
        limit: filled more than was ordered or in the other direction, added
        risk while HALTED or REDUCING, or left the position's notional above
        max_position_usd by more than the price collar while adding risk.
        """
        st = self.state
        if not filled_qty:
            return False
        st.turnover_usd += abs(filled_qty) * price
        new = position_before + filled_qty
        # the position changed now, not at the next mark: later checks of other symbols must see it
        st.notional_usd[symbol] = new * price
        grows = abs(new) > abs(position_before) or new * position_before < 0
        breach = (
            abs(filled_qty) > abs(ordered_qty)
            or filled_qty * ordered_qty < 0
            or (grows and st.trading_state != ACTIVE)
            or (grows and abs(new) * price > self._max_pos * (1.0 + self._collar))
        )
        if breach:
            self.hard_limit_breaches += 1
        return breach

    @property
    def state_changes(self) -> int:
        """How many times the trading state (or its cause) changed."""
        return self._state_changes


def _whole(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and _isfinite(v) and int(v) == v


# -- the original one-shot API, kept for callers that hold no state ---------------------------
def check(
    target_qty: int,
    position_qty: int,
    price: float,
    day_pnl_usd: float,
    limits: RiskLimits,
) -> Verdict:
    """Stateless convenience: a fresh governor (no drawdown, no turnover, no throttle history)
    with ``day_pnl_usd`` marked, checked once with a fresh price. See :class:`Governor`."""
    if not (isinstance(day_pnl_usd, (int, float)) and _isfinite(day_pnl_usd)):
        return Verdict(0, (Reason.INVALID_INPUT,), True)
    lim = limits if limits.complete else limits.resolved(limits.capital_usd or 1e18)
    g = Governor(lim)
    g.state.day_pnl_usd = day_pnl_usd
    g._evaluate()
    return g.check("", target_qty, position_qty, price, price, 0, 0)


__all__ = [
    "DEFAULT_FRACTIONS",
    "ENV_VARS",
    "Governor",
    "GovernorState",
    "Reason",
    "RiskLimits",
    "SEED_LIMITS_USD",
    "TradingState",
    "Verdict",
    "check",
    "default_limits",
    "limits_from_env",
    "seed_limits",
]
