"""New York Stock Exchange sessions and the end-of-day flatten rule.

Source of truth: ``exchange_calendars`` ``XNYS`` (holidays, early closes such as
the day after Thanksgiving and Christmas Eve at 13:00 New York, and the
America/New_York DST switches). Times are aware UTC everywhere; New York time
only appears inside the calendar.

The rule the engine applies (seed runbook: "flatten at 15:55 ET"):

* trading is allowed only while an order would fill inside a session and
  before ``close - FLATTEN_LEAD`` (5 minutes), i.e. in ``[open, close - 5 min)``;
* from ``close - 5 min`` on (13:00 early closes: from 12:55) the target is flat
  and every order is a *closing* order;
* on a non-session (weekend, holiday) nothing new is traded; a position that
  somehow exists may only be closed.

Lookups are a dict hit per date after the first use (the calendar is built once,
lazily, for 2000-2035: the daily history of the bokeh sample starts in 2000); dates
outside that range are treated as non-sessions (fail closed).

Bar intervals (:func:`fill_time`, :func:`price_time`): an intraday bar of ``bar_seconds``
(60 minute bars, 300 five-minute bars) starting at ``ts`` closes at ``ts + bar_seconds``,
and a decision on its close fills at the next bar's open, the same instant. A *daily* bar
(``bar_seconds == DAILY_BAR_SECONDS``, one bar per XNYS session) starts at its session's
open and closes at that session's close; a decision on it fills at the NEXT session's open
(over weekends and holidays, not ``ts + 86400``), and the end-of-day flatten does not apply
(the fill time is a session open, inside ``[open, close - lead)``): daily positions are held
across sessions.
"""

from __future__ import annotations

import bisect
import threading
import warnings
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

#: int64 ns stand-in for "no session" in array results (:meth:`SessionClock.phases`)
NO_SESSION = -(2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ns(ts: datetime) -> int:
    """int64 ns since the epoch of an aware datetime (microsecond resolution)."""
    return (ts - _EPOCH) // timedelta(microseconds=1) * 1000


#: exchange_calendars name of the New York Stock Exchange
CALENDAR_NAME = "XNYS"
#: the position is flat from this long before the session close (seed runbook: 15:55 ET)
FLATTEN_LEAD = timedelta(minutes=5)
FLATTEN_LEAD_S = FLATTEN_LEAD.total_seconds()
#: range of sessions loaded from the calendar; outside it every date is a non-session
CALENDAR_START = "2000-01-01"
CALENDAR_END = "2035-12-31"

NEW_YORK = ZoneInfo("America/New_York")
#: ``bar_seconds`` of daily bars: one bar per XNYS session, stamped at the session open
DAILY_BAR_SECONDS = 86_400
#: seconds of one regular XNYS session (09:30-16:00 New York)
SESSION_SECONDS = 23_400


def is_daily(bar_seconds: float) -> bool:
    """True if bars of ``bar_seconds`` seconds are daily bars (one per session, see the module docstring)."""
    return bar_seconds >= DAILY_BAR_SECONDS


def bars_per_session(bar_seconds: float) -> float:
    """Bars of ``bar_seconds`` seconds in one regular session: 390 minute bars, 78 five-minute
    bars, 1 daily bar (6.5 h = 23,400 s of regular trading; early closes are not counted)."""
    if is_daily(bar_seconds):
        return 1.0
    return SESSION_SECONDS / bar_seconds


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session: ``day`` (New York date), ``open`` / ``close`` aware UTC."""

    day: date
    open: datetime
    close: datetime

    @property
    def early_close(self) -> bool:
        """True if the session closes before 16:00 New York."""
        return self.close.astimezone(NEW_YORK).hour < 16

    def flatten_at(self, lead: timedelta = FLATTEN_LEAD) -> datetime:
        """The time from which the position must be flat (close - lead), aware UTC."""
        return self.close - lead


_lock = threading.Lock()
_sessions: dict[date, Session] | None = None
_days: list[date] = []  # the session dates, sorted (for next_session)


def _load() -> dict[date, Session]:
    global _sessions, _days
    with _lock:
        if _sessions is None:
            with warnings.catch_warnings():
                # exchange_calendars 4.13 trips pandas 3.x deprecation warnings internally
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                import exchange_calendars

                cal = exchange_calendars.get_calendar(CALENDAR_NAME, start=CALENDAR_START, end=CALENDAR_END)
                sched = cal.schedule
            out: dict[date, Session] = {}
            for label, o, c in zip(sched.index, sched["open"], sched["close"]):
                d = label.date()
                out[d] = Session(d, o.to_pydatetime().astimezone(timezone.utc), c.to_pydatetime().astimezone(timezone.utc))
            _days = sorted(out)
            _sessions = out
    return _sessions


def new_york_date(ts: datetime) -> date:
    """The New York calendar date of an aware (or naive = UTC) timestamp."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(NEW_YORK).date()


def session_for(day: date) -> Session | None:
    """The XNYS session on New York date ``day``, or None (weekend, holiday, out of range)."""
    return _load().get(day)


def next_session(day: date) -> Session | None:
    """The first XNYS session strictly after New York date ``day`` (whatever ``day`` is), or
    None beyond the loaded range (fail closed)."""
    _load()
    i = bisect.bisect_right(_days, day)
    return _sessions[_days[i]] if i < len(_days) else None


def session_at_index(i: int) -> Session | None:
    """The ``i``-th loaded session (:func:`session_index`'s inverse), or None beyond the loaded range."""
    _load()
    return _sessions[_days[i]] if 0 <= i < len(_days) else None


def session_index(day: date) -> int:
    """Position of session ``day`` among the loaded sessions (0 = the first, 2000-01-03):
    consecutive sessions differ by 1. Raises KeyError if ``day`` is not a session."""
    if _load().get(day) is None:
        raise KeyError(f"{day} is not an XNYS session")
    return bisect.bisect_left(_days, day)


def fill_time(ts: datetime, bar_seconds: int) -> datetime:
    """When a decision on the close of the bar starting at ``ts`` (aware UTC) fills: the next
    bar's open. Intraday: ``ts + bar_seconds``. Daily: the open of the next session after
    ``ts``'s New York date; beyond the calendar, ``ts + 1 day`` (a non-session there: flat)."""
    if not is_daily(bar_seconds):
        return ts + timedelta(seconds=bar_seconds)
    nxt = next_session(new_york_date(ts))
    return ts + timedelta(days=1) if nxt is None else nxt.open


def price_time(ts: datetime, bar_seconds: int) -> datetime:
    """When the close of the bar starting at ``ts`` (aware UTC) was printed: intraday
    ``ts + bar_seconds``; daily, the close of ``ts``'s session (early closes included; on a
    non-session, ``ts + 1 day``)."""
    if not is_daily(bar_seconds):
        return ts + timedelta(seconds=bar_seconds)
    s = session_at(ts)
    return ts + timedelta(days=1) if s is None else s.close


def bar_times_ns(ts_ns: np.ndarray, bar_seconds: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fill_time` and :func:`price_time` of many bar starts at once: int64 ns since the
    epoch (UTC), shape (n,) in, ``(fill_ns, price_ns)`` out. Intraday both are ``ts + bar``;
    daily one calendar lookup per bar (a daily series is short)."""
    ts_ns = np.asarray(ts_ns, dtype="int64")
    if not is_daily(bar_seconds):
        t = ts_ns + int(bar_seconds) * 1_000_000_000
        return t, t
    fill = np.empty_like(ts_ns)
    price = np.empty_like(ts_ns)
    for i, t in enumerate(ts_ns.tolist()):
        at = _EPOCH + timedelta(microseconds=t // 1000)
        fill[i], price[i] = _ns(fill_time(at, bar_seconds)), _ns(price_time(at, bar_seconds))
    return fill, price


def session_at(ts: datetime) -> Session | None:
    """The session of the New York date containing ``ts`` (whether or not ``ts`` is inside it)."""
    return session_for(new_york_date(ts))


def is_trading_time(ts: datetime, lead: timedelta = FLATTEN_LEAD) -> bool:
    """True if an order filling at ``ts`` may open or add risk: ``open <= ts < close - lead``."""
    s = session_at(ts)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return s is not None and s.open <= ts < s.close - lead


def must_be_flat(ts: datetime, lead: timedelta = FLATTEN_LEAD) -> bool:
    """True if at ``ts`` the position must be flat: a non-session, or at/after ``close - lead``.

    Before the open of a session the answer is False (nothing may be traded
    either, see :func:`is_trading_time`, but an overnight flat book is already flat).
    """
    s = session_at(ts)
    if s is None:
        return True
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts >= s.close - lead or ts >= s.close


def session_close_utc(ts: datetime) -> datetime | None:
    """Close of the session of ``ts``'s New York date (aware UTC), or None on a non-session."""
    s = session_at(ts)
    return None if s is None else s.close


def early_closes(start: date, end: date) -> list[Session]:
    """Sessions between ``start`` and ``end`` (inclusive) that close before 16:00 New York."""
    return [s for d, s in sorted(_load().items()) if start <= d <= end and s.early_close]


class SessionClock:
    """Per-engine cache of the end-of-day rule: one dict lookup per new date, then comparisons.

    ``lead_s``: seconds before the close from which the book must be flat
    (``<= 0`` disables the flatten, not the no-trading-on-non-sessions rule).
    """

    __slots__ = ("lead", "_day", "_session", "_lo", "_hi")

    def __init__(self, lead_s: float = FLATTEN_LEAD_S) -> None:
        self.lead = timedelta(seconds=max(lead_s, 0.0))
        self._day: date | None = None
        self._session: Session | None = None
        self._lo = self._hi = _EPOCH  # the cached New York date, as a UTC interval [lo, hi)

    def day(self, ts: datetime) -> date:
        """``ts``'s New York date (naive = UTC); cached as a UTC interval, so a time within the
        last date looked up costs two comparisons and no time-zone conversion."""
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        if self._lo <= ts < self._hi:
            return self._day
        d = new_york_date(ts)
        if d != self._day:
            self._day = d
            self._session = session_for(d)
        self._lo = datetime.combine(d, time(0), NEW_YORK).astimezone(timezone.utc)
        self._hi = datetime.combine(d + timedelta(days=1), time(0), NEW_YORK).astimezone(timezone.utc)
        return d

    def session(self, ts: datetime) -> Session | None:
        """The session of ``ts``'s New York date (cached per date)."""
        self.day(ts)
        return self._session

    def phase(self, fill_ts: datetime) -> int:
        """For an order that would fill at ``fill_ts``: 1 = may trade, 0 = closed (no new risk,
        nothing held overnight to close), -1 = must be flat (non-session or close-lead)."""
        s = self.session(fill_ts)
        if s is None:
            return -1
        if self.lead and fill_ts >= s.close - self.lead:
            return -1
        if fill_ts >= s.close:
            return -1
        if fill_ts < s.open:
            return 0
        return 1

    def phases(self, fill_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`phase` of many fill times at once, and the open of each one's session.

        ``fill_ns``: int64 ns since the epoch (UTC), shape (n,). Returns ``(phase,
        open_ns)``: int8 phases (1 / 0 / -1, as :meth:`phase`) and int64 session opens
        (ns, ``NO_SESSION`` = -2**63 on a non-session), shape (n,). One calendar
        lookup per distinct New York date; a unit test checks it equals
        :meth:`phase` and :meth:`session` bar by bar.
        """
        fill_ns = np.asarray(fill_ns, dtype="int64")
        days = new_york_days(fill_ns)
        uniq, inv = np.unique(days, return_inverse=True)
        opens = np.full(len(uniq), NO_SESSION, dtype="int64")
        closes = np.full(len(uniq), NO_SESSION, dtype="int64")
        for j, d in enumerate(uniq.tolist()):
            s = session_for(d)
            if s is not None:
                opens[j], closes[j] = _ns(s.open), _ns(s.close)
        open_ns, close_ns = opens[inv], closes[inv]
        lead_ns = self.lead // timedelta(microseconds=1) * 1000
        flat = (open_ns == NO_SESSION) | (fill_ns >= close_ns)
        if lead_ns:
            flat |= fill_ns >= close_ns - lead_ns
        phase = np.where(flat, -1, np.where(fill_ns < open_ns, 0, 1)).astype("int8")
        return phase, open_ns


def new_york_days(ts_ns: np.ndarray) -> np.ndarray:
    """New York calendar date of each time (int64 ns since the epoch, UTC), as datetime64[D], shape (n,)."""
    import pandas as pd

    idx = pd.DatetimeIndex(np.asarray(ts_ns, dtype="int64").view("datetime64[ns]"), tz="UTC").tz_convert(NEW_YORK)
    return idx.tz_localize(None).values.astype("datetime64[D]")


__all__ = [
    "CALENDAR_NAME",
    "DAILY_BAR_SECONDS",
    "SESSION_SECONDS",
    "bar_times_ns",
    "bars_per_session",
    "fill_time",
    "is_daily",
    "next_session",
    "price_time",
    "session_index",
    "FLATTEN_LEAD",
    "FLATTEN_LEAD_S",
    "NO_SESSION",
    "Session",
    "SessionClock",
    "early_closes",
    "is_trading_time",
    "must_be_flat",
    "new_york_date",
    "new_york_days",
    "session_at",
    "session_close_utc",
    "session_for",
]
