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
lazily, for 2020-2035); dates outside that range are treated as non-sessions
(fail closed).
"""

from __future__ import annotations

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
CALENDAR_START = "2020-01-01"
CALENDAR_END = "2035-12-31"

NEW_YORK = ZoneInfo("America/New_York")


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


def _load() -> dict[date, Session]:
    global _sessions
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
