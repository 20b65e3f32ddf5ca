"""Independent auditor: re-derives every limit's verdict from the orders and fills alone.

It never reads the governor (state, limits, counters) nor the engine's books: it is given
its own :class:`AuditLimits` (the seed runbook's figures, written out here, not derived by
:func:`~quantramp.trader.governor.seed_limits`), and per bar the bar, the order the pod
decided on it (signed shares, decided at the bar's close) and the fill it got at the bar's
open. From those it keeps its own position, cash, fees, turnover, day P&L, equity peak and
trading-state latches, and names the control each accepted order or held position broke.

Rules (controls, by name):

- ``max_order``: a risk-adding order's notional (|qty| x decision price) <= max_order_usd;
- ``max_position``: after a risk-adding order, |position| x price <= max_position_usd;
- ``max_daily_turnover``: today's traded notional (all fills) + a risk-adding order's
  notional <= max_daily_turnover_usd;
- ``price_collar``: a risk-adding order's price within price_collar_ratio of the previous close;
- ``order_throttle``: a risk-adding order is accepted only if fewer than
  max_orders_per_window orders were accepted in the trailing throttle window (market time);
- ``daily_loss_limit``: once today's P&L <= -max_daily_loss_usd: no risk-adding order for the
  rest of the day, and the position is flat within ``flatten_grace_bars`` bars;
- ``drawdown_ladder``: once the drawdown from the equity peak >= drawdown_reduce_usd (until it
  is back below drawdown_soft_usd) or >= drawdown_halt_usd (for good): no risk-adding order;
- ``end_of_day_flatten`` (intraday bars): no position held on a bar starting at or after
  ``close - 4 min`` of its session (the flatten fills at close - 5 min; one bar of grace; early
  closes included), nor on a bar of a date that is no session; daily bars hold positions across
  sessions and are exempt;
- ``stale_price``: no order decided on a bar older than max_price_age_s behind the newest bar.

Sessions are the symbol's exchange's (``calendar``, an exchange_calendars name; XNYS by
default), read from exchange_calendars directly, not through the pod's :mod:`..session`: the
trading day is the exchange's local date, a decision is timed at its bar's close (intraday
``ts + bar_seconds``; a daily bar, 86,400, at its session's close).

Units: USD, shares, seconds; ratios 0-1. Times are bar start times (UTC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

_EPS = 1e-9
_DAILY = 86_400


class _Sessions:
    """(open, close) UTC of each local date's session of one exchange_calendars calendar, cached."""

    def __init__(self, name: str) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import exchange_calendars

            self._cal = exchange_calendars.get_calendar(name, start="2000-01-01", end="2035-12-31")
        self.tz = ZoneInfo(str(self._cal.tz))
        self._cache: dict = {}

    def get(self, day) -> tuple[datetime, datetime] | None:
        if day not in self._cache:
            label = day.isoformat()
            ok = self._cal.first_session.date() <= day <= self._cal.last_session.date() and self._cal.is_session(label)
            self._cache[day] = (self._cal.session_open(label).to_pydatetime(),
                                self._cal.session_close(label).to_pydatetime()) if ok else None
        return self._cache[day]

#: every control the auditor can name
CONTROLS = (
    "max_order", "max_position", "max_daily_turnover", "price_collar", "order_throttle",
    "daily_loss_limit", "drawdown_ladder", "end_of_day_flatten", "stale_price",
)


@dataclass(frozen=True)
class AuditLimits:
    """The limits the auditor holds the pod to (USD, seconds, ratios 0-1)."""

    capital_usd: float
    max_order_usd: float
    max_position_usd: float
    max_daily_turnover_usd: float
    max_daily_loss_usd: float
    drawdown_soft_usd: float
    drawdown_reduce_usd: float
    drawdown_halt_usd: float
    price_collar_ratio: float = 0.02
    max_orders_per_window: int = 10
    throttle_window_s: float = 60.0
    max_price_age_s: float = 90.0

    @staticmethod
    def seed_runbook(capital_usd: float = 1_000.0, **override) -> "AuditLimits":
        """The seed runbook's hard limits for its $1,000 pod ($50 single trade, $500 position,
        $2,000 daily turnover, $100 daily loss, -$20 drawdown halves size; seeds 000/001),
        scaled linearly to ``capital_usd``; REDUCING at 3 % of capital, HALT at 2 x the daily
        loss (the project's documented derivation, issue 12 / review D1); ``override`` any."""
        k = capital_usd / 1_000.0
        base = dict(
            capital_usd=capital_usd, max_order_usd=50.0 * k, max_position_usd=500.0 * k,
            max_daily_turnover_usd=2_000.0 * k, max_daily_loss_usd=100.0 * k, drawdown_soft_usd=20.0 * k,
            drawdown_reduce_usd=0.03 * capital_usd, drawdown_halt_usd=200.0 * k,
        )
        base.update(override)
        return AuditLimits(**base)


@dataclass
class Auditor:
    """Feed :meth:`bar` once per bar, in order; read :attr:`violations` (control -> list of texts)."""

    lim: AuditLimits
    bar_seconds: int = 60
    calendar: str = "XNYS"
    flatten_grace_bars: int = 2
    position: int = 0
    cash: float = 0.0
    peak: float = math.nan
    violations: dict[str, list[str]] = field(default_factory=lambda: {c: [] for c in CONTROLS})
    _day: object = None
    _day_start_pnl: float = 0.0
    _turnover: float = 0.0
    _day_loss: bool = False
    _loss_since: int = -1
    _reducing: bool = False
    _halted: bool = False
    _prev_close: float = math.nan
    _newest: datetime | None = None
    _accepted: list[datetime] = field(default_factory=list)
    _n: int = 0
    _sessions: _Sessions | None = None

    def __post_init__(self) -> None:
        self._sessions = _Sessions(self.calendar)

    def _v(self, control: str, ts: datetime, text: str) -> None:
        lst = self.violations[control]
        if len(lst) < 20:
            lst.append(f"{ts.isoformat()}: {text}")

    def count(self) -> dict[str, int]:
        """Violations per control (only controls with any)."""
        return {c: len(v) for c, v in self.violations.items() if v}

    def bar(self, ts: datetime, close: float, fill_qty: int, fill_price: float, fill_fees: float, order_qty: int) -> None:
        """One bar: start ``ts`` (UTC), ``close`` USD; the fill it got at its open (signed shares,
        average price USD, fees USD; 0 shares if none); the order decided at its close (signed
        shares, 0 if none)."""
        lim = self.lim
        self._n += 1
        local = ts.astimezone(self._sessions.tz)
        session = self._sessions.get(local.date())
        daily = self.bar_seconds >= _DAILY
        if local.date() != self._day:
            self._day = local.date()
            # day P&L from the previous close (the gap belongs to the new day, as in the engine)
            prev = self._prev_close if self._prev_close > 0 else close
            self._day_start_pnl = self.cash + self.position * prev if self.position else self.cash
            self._turnover = 0.0
            self._day_loss = False
            self._loss_since = -1
        if fill_qty:
            self.position += fill_qty
            self.cash -= fill_qty * fill_price + fill_fees
            self._turnover += abs(fill_qty) * fill_price
        if not (close > 0 and math.isfinite(close)):
            return
        stale = self._newest is not None and (self._newest - ts).total_seconds() > lim.max_price_age_s
        if self._newest is None or ts > self._newest:
            self._newest = ts
        pnl = self.cash + self.position * close
        equity = lim.capital_usd + pnl
        self.peak = equity if not (self.peak >= equity) else self.peak
        dd = self.peak - equity
        if dd >= lim.drawdown_halt_usd:
            self._halted = True
        if dd >= lim.drawdown_reduce_usd:
            self._reducing = True
        elif dd < lim.drawdown_soft_usd:
            self._reducing = False
        if pnl - self._day_start_pnl <= -lim.max_daily_loss_usd and not self._day_loss:
            self._day_loss, self._loss_since = True, self._n
        if self._day_loss and self.position and self._n - self._loss_since >= self.flatten_grace_bars:
            self._v("daily_loss_limit", ts, f"position {self.position} held {self._n - self._loss_since} bars after the daily loss")
        if self.position and not daily:
            if session is None:
                self._v("end_of_day_flatten", ts, f"position {self.position} on {local.date()}, no {self.calendar} session")
            elif ts >= session[1] - timedelta(minutes=4):
                self._v("end_of_day_flatten", ts, f"position {self.position} at {local:%H:%M} {self.calendar} local time "
                                                  f"(close {session[1].astimezone(self._sessions.tz):%H:%M})")
        q = order_qty
        if q:
            t_dec = session[1] if daily and session is not None else ts + timedelta(seconds=self.bar_seconds)
            if stale:
                self._v("stale_price", ts, f"order {q} on a bar older than the newest by > {lim.max_price_age_s:g} s")
            pos, new = self.position, self.position + q
            adds = abs(new) > abs(pos) or new * pos < 0
            if adds:
                notional = abs(q) * close
                if notional > lim.max_order_usd * (1 + _EPS):
                    self._v("max_order", ts, f"order {q} x {close} = {notional:.2f} > {lim.max_order_usd:.2f}")
                if abs(new) * close > lim.max_position_usd * (1 + _EPS):
                    self._v("max_position", ts, f"position {new} x {close} > {lim.max_position_usd:.2f}")
                if self._turnover + notional > lim.max_daily_turnover_usd * (1 + _EPS):
                    self._v("max_daily_turnover", ts, f"turnover {self._turnover:.2f} + {notional:.2f} > {lim.max_daily_turnover_usd:.2f}")
                prev = self._prev_close
                if not (prev > 0) or abs(close - prev) > lim.price_collar_ratio * prev * (1 + _EPS):
                    self._v("price_collar", ts, f"order {q} at {close} vs previous close {prev}")
                window = [t for t in self._accepted if t > t_dec - timedelta(seconds=lim.throttle_window_s)]
                if len(window) >= lim.max_orders_per_window:
                    self._v("order_throttle", ts, f"{len(window)} orders in the last {lim.throttle_window_s:g} s")
                if self._day_loss:
                    self._v("daily_loss_limit", ts, f"order {q} adds risk after the daily loss")
                if self._reducing or self._halted:
                    self._v("drawdown_ladder", ts, f"order {q} adds risk at drawdown {dd:.2f}")
            self._accepted.append(t_dec)
            if len(self._accepted) > 4 * lim.max_orders_per_window:
                del self._accepted[0]
        self._prev_close = close


__all__ = ["AuditLimits", "Auditor", "CONTROLS"]
