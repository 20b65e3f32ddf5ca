"""Exchange sessions and the end-of-day flatten rule, one calendar per symbol.

Source of truth: ``exchange_calendars`` (holidays, early closes such as the day after
Thanksgiving at 13:00 New York or Christmas Eve at 12:30 London, and each exchange's DST
switches). A symbol trades the sessions of its exchange's calendar (:class:`Calendar`,
:func:`calendar`; ``XNYS``, the New York Stock Exchange, by default). Times are aware UTC
everywhere; local time only appears inside a calendar. The module-level functions
(:func:`session_for`, :func:`fill_time`, ...) are those of the default ``XNYS`` calendar.

Supported calendars (:data:`SUPPORTED_CALENDARS`) are the equity exchanges whose sessions
lie within one local date and have no midday break (a unit test checks every one over
the loaded range): a session is looked up by the local date of a time. Prices are taken as
USD (quantramp books every symbol in USD and converts no currency): on an exchange that
quotes in another currency, trade a USD line or convert the bars first.

The rule the engine applies (seed runbook: "flatten at 15:55 ET", i.e. 5 minutes before
the close, for every exchange):

* trading is allowed only while an order would fill inside a session and
  before ``close - FLATTEN_LEAD`` (5 minutes), i.e. in ``[open, close - 5 min)``;
* from ``close - 5 min`` on (13:00 early closes: from 12:55) the target is flat
  and every order is a *closing* order;
* on a non-session (weekend, holiday) nothing new is traded; a position that
  somehow exists may only be closed.

Lookups are a dict hit per date after the first use (a calendar is built once, lazily,
for 2000-2035: the daily history of the bokeh sample starts in 2000); dates outside that
range are treated as non-sessions (fail closed).

Bar intervals (:meth:`Calendar.fill_time`, :meth:`Calendar.price_time`): an intraday bar of
``bar_seconds`` (60 minute bars, 300 five-minute bars) starting at ``ts`` closes at
``ts + bar_seconds``, and a decision on its close fills at the next bar's open, the same
instant. A *daily* bar (``bar_seconds == DAILY_BAR_SECONDS``, one bar per session) starts
at its session's open and closes at that session's close; a decision on it fills at the
NEXT session's open (over weekends and holidays, not ``ts + 86400``), and the end-of-day
flatten does not apply (the fill time is a session open, inside ``[open, close - lead)``):
daily positions are held across sessions.
"""

from __future__ import annotations

import bisect
import collections
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


#: exchange_calendars name of the New York Stock Exchange: the default calendar of a symbol
CALENDAR_NAME = "XNYS"
#: exchange_calendars names a symbol may trade on (ISO 10383 MICs): equity exchanges whose
#: sessions lie within one local date, without a midday break, loadable for 2000-2035
#: (checked by tests/unit/trader/test_symbol_calendars.py)
SUPPORTED_CALENDARS = (
    "XNYS", "XTSE", "XMEX",  # Americas: New York, Toronto, Mexico
    "XLON", "XDUB", "XETR", "XPAR", "XAMS", "XBRU", "XLIS", "XMIL", "XMAD", "XSWX", "XWBO",  # Europe
    "XSTO", "XCSE", "XHEL", "XOSL",  # Nordics
    "XJSE", "XASX", "XNZE",  # Johannesburg, Sydney, Wellington
)
#: the position is flat from this long before the session close (seed runbook: 15:55 ET)
FLATTEN_LEAD = timedelta(minutes=5)
FLATTEN_LEAD_S = FLATTEN_LEAD.total_seconds()
#: range of sessions loaded from the calendar; outside it every date is a non-session
CALENDAR_START = "2000-01-01"
CALENDAR_END = "2035-12-31"

NEW_YORK = ZoneInfo("America/New_York")
#: ``bar_seconds`` of daily bars: one bar per session, stamped at the session open
DAILY_BAR_SECONDS = 86_400
#: seconds of one regular XNYS session (09:30-16:00 New York)
SESSION_SECONDS = 23_400


class UnknownCalendar(ValueError):
    """A calendar name quantramp does not trade (not in :data:`SUPPORTED_CALENDARS`)."""


def is_daily(bar_seconds: float) -> bool:
    """True if bars of ``bar_seconds`` seconds are daily bars (one per session, see the module docstring)."""
    return bar_seconds >= DAILY_BAR_SECONDS


def bars_per_session(bar_seconds: float) -> float:
    """Bars of ``bar_seconds`` seconds in one regular XNYS session: 390 minute bars, 78 five-minute
    bars, 1 daily bar (6.5 h = 23,400 s of regular trading; early closes are not counted)."""
    if is_daily(bar_seconds):
        return 1.0
    return SESSION_SECONDS / bar_seconds


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session: ``day`` (the exchange's local date), ``open`` / ``close`` aware UTC,
    ``early_close``: True if it closes before the calendar's regular close time."""

    day: date
    open: datetime
    close: datetime
    early_close: bool = False

    def flatten_at(self, lead: timedelta = FLATTEN_LEAD) -> datetime:
        """The time from which the position must be flat (close - lead), aware UTC."""
        return self.close - lead


class Calendar:
    """The sessions of one exchange_calendars calendar (``name``, one of :data:`SUPPORTED_CALENDARS`).

    Built lazily on first use (about 0.1 s), then every lookup is a dict hit or a bisect.
    ``tz``: the exchange's time zone; a time's session is the session of its local date.
    ``session_seconds``: the regular session's length, seconds (the most common one:
    XNYS 23,400, XLON 30,600). Raises :class:`UnknownCalendar` for another name.
    """

    def __init__(self, name: str = CALENDAR_NAME) -> None:
        if name not in SUPPORTED_CALENDARS:
            raise UnknownCalendar(
                f"calendar {name!r} is not supported: use one of {', '.join(SUPPORTED_CALENDARS)} "
                "(exchange_calendars names of exchanges whose sessions have no midday break)")
        self.name = name
        self._lock = threading.Lock()
        self._sessions: dict[date, Session] | None = None
        self._days: list[date] = []
        self._tz: ZoneInfo | None = None
        self._session_seconds = float(SESSION_SECONDS)

    def __repr__(self) -> str:
        return f"Calendar({self.name!r})"

    def _load(self) -> dict[date, Session]:
        if self._sessions is not None:
            return self._sessions
        with self._lock:
            if self._sessions is None:
                with warnings.catch_warnings():
                    # exchange_calendars 4.13 trips pandas 3.x deprecation warnings internally
                    warnings.simplefilter("ignore", FutureWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    import exchange_calendars

                    cal = exchange_calendars.get_calendar(self.name, start=CALENDAR_START, end=CALENDAR_END)
                    sched = cal.schedule
                tz = ZoneInfo(str(cal.tz))
                spans = [(label.date(), o.to_pydatetime().astimezone(timezone.utc), c.to_pydatetime().astimezone(timezone.utc))
                         for label, o, c in zip(sched.index, sched["open"], sched["close"])]
                regular = collections.Counter(c.astimezone(tz).time() for _, _, c in spans).most_common(1)[0][0]
                length = collections.Counter(int((c - o).total_seconds()) for _, o, c in spans).most_common(1)[0][0]
                out = {d: Session(d, o, c, c.astimezone(tz).time() < regular) for d, o, c in spans}
                self._tz, self._session_seconds, self._days = tz, float(length), sorted(out)
                self._sessions = out
        return self._sessions

    @property
    def tz(self) -> ZoneInfo:
        """The exchange's time zone."""
        self._load()
        return self._tz

    @property
    def session_seconds(self) -> float:
        """Length of a regular session, seconds (XNYS: 23,400; XLON: 30,600)."""
        self._load()
        return self._session_seconds

    def local_date(self, ts: datetime) -> date:
        """The exchange's local date of an aware (or naive = UTC) timestamp."""
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return ts.astimezone(self.tz).date()

    def session_for(self, day: date) -> Session | None:
        """The session on local date ``day``, or None (weekend, holiday, out of range)."""
        return self._load().get(day)

    def next_session(self, day: date) -> Session | None:
        """The first session strictly after local date ``day`` (whatever ``day`` is), or None
        beyond the loaded range (fail closed)."""
        sessions = self._load()
        i = bisect.bisect_right(self._days, day)
        return sessions[self._days[i]] if i < len(self._days) else None

    def session_at_index(self, i: int) -> Session | None:
        """The ``i``-th loaded session (:meth:`session_index`'s inverse), or None beyond the loaded range."""
        sessions = self._load()
        return sessions[self._days[i]] if 0 <= i < len(self._days) else None

    def session_index(self, day: date) -> int:
        """Position of session ``day`` among the loaded sessions (0 = the first, XNYS 2000-01-03):
        consecutive sessions differ by 1. Raises KeyError if ``day`` is not a session."""
        if self._load().get(day) is None:
            raise KeyError(f"{day} is not an {self.name} session")
        return bisect.bisect_left(self._days, day)

    def sessions_through(self, day: date) -> int:
        """How many loaded sessions fall on or before local date ``day`` (0 before the first)."""
        self._load()
        return bisect.bisect_right(self._days, day)

    def session_at(self, ts: datetime) -> Session | None:
        """The session of the local date containing ``ts`` (whether or not ``ts`` is inside it)."""
        return self.session_for(self.local_date(ts))

    def fill_time(self, ts: datetime, bar_seconds: int) -> datetime:
        """When a decision on the close of the bar starting at ``ts`` (aware UTC) fills: the next
        bar's open. Intraday: ``ts + bar_seconds``. Daily: the open of the next session after
        ``ts``'s local date; beyond the calendar, ``ts + 1 day`` (a non-session there: flat)."""
        if not is_daily(bar_seconds):
            return ts + timedelta(seconds=bar_seconds)
        nxt = self.next_session(self.local_date(ts))
        return ts + timedelta(days=1) if nxt is None else nxt.open

    def price_time(self, ts: datetime, bar_seconds: int) -> datetime:
        """When the close of the bar starting at ``ts`` (aware UTC) was printed: intraday
        ``ts + bar_seconds``; daily, the close of ``ts``'s session (early closes included; on a
        non-session, ``ts + 1 day``)."""
        if not is_daily(bar_seconds):
            return ts + timedelta(seconds=bar_seconds)
        s = self.session_at(ts)
        return ts + timedelta(days=1) if s is None else s.close

    def bar_times_ns(self, ts_ns: np.ndarray, bar_seconds: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`fill_time` and :meth:`price_time` of many bar starts at once: int64 ns since the
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
            fill[i], price[i] = _ns(self.fill_time(at, bar_seconds)), _ns(self.price_time(at, bar_seconds))
        return fill, price

    def is_trading_time(self, ts: datetime, lead: timedelta = FLATTEN_LEAD) -> bool:
        """True if an order filling at ``ts`` may open or add risk: ``open <= ts < close - lead``."""
        s = self.session_at(ts)
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return s is not None and s.open <= ts < s.close - lead

    def must_be_flat(self, ts: datetime, lead: timedelta = FLATTEN_LEAD) -> bool:
        """True if at ``ts`` the position must be flat: a non-session, or at/after ``close - lead``.

        Before the open of a session the answer is False (nothing may be traded
        either, see :meth:`is_trading_time`, but an overnight flat book is already flat).
        """
        s = self.session_at(ts)
        if s is None:
            return True
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return ts >= s.close - lead or ts >= s.close

    def session_close_utc(self, ts: datetime) -> datetime | None:
        """Close of the session of ``ts``'s local date (aware UTC), or None on a non-session."""
        s = self.session_at(ts)
        return None if s is None else s.close

    def early_closes(self, start: date, end: date) -> list[Session]:
        """Sessions between ``start`` and ``end`` (inclusive) that close before the regular close."""
        return [s for d, s in sorted(self._load().items()) if start <= d <= end and s.early_close]

    def local_days(self, ts_ns: np.ndarray) -> np.ndarray:
        """Local date of each time (int64 ns since the epoch, UTC), as datetime64[D], shape (n,)."""
        import pandas as pd

        idx = pd.DatetimeIndex(np.asarray(ts_ns, dtype="int64").view("datetime64[ns]"), tz="UTC").tz_convert(self.tz)
        return idx.tz_localize(None).values.astype("datetime64[D]")


_calendars: dict[str, Calendar] = {}
_calendars_lock = threading.Lock()


def calendar(name: str = CALENDAR_NAME) -> Calendar:
    """The :class:`Calendar` named ``name`` (one instance per name, shared). Raises
    :class:`UnknownCalendar` for a name not in :data:`SUPPORTED_CALENDARS`."""
    cal = _calendars.get(name)
    if cal is None:
        with _calendars_lock:
            cal = _calendars.setdefault(name, Calendar(name))
    return cal


#: the default calendar (XNYS); the module-level functions below are its methods
XNYS = calendar(CALENDAR_NAME)
session_for = XNYS.session_for
next_session = XNYS.next_session
session_at_index = XNYS.session_at_index
session_index = XNYS.session_index
session_at = XNYS.session_at
fill_time = XNYS.fill_time
price_time = XNYS.price_time
bar_times_ns = XNYS.bar_times_ns
is_trading_time = XNYS.is_trading_time
must_be_flat = XNYS.must_be_flat
session_close_utc = XNYS.session_close_utc
early_closes = XNYS.early_closes


def new_york_date(ts: datetime) -> date:
    """The New York calendar date of an aware (or naive = UTC) timestamp."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(NEW_YORK).date()


def new_york_days(ts_ns: np.ndarray) -> np.ndarray:
    """New York calendar date of each time (int64 ns since the epoch, UTC), as datetime64[D], shape (n,)."""
    return XNYS.local_days(ts_ns)


class SessionClock:
    """Per-engine cache of the end-of-day rule of one calendar: one dict lookup per new date,
    then comparisons.

    ``lead_s``: seconds before the close from which the book must be flat
    (``<= 0`` disables the flatten, not the no-trading-on-non-sessions rule).
    ``cal``: the symbol's calendar (default XNYS).
    """

    __slots__ = ("lead", "calendar", "_day", "_session", "_lo", "_hi")

    def __init__(self, lead_s: float = FLATTEN_LEAD_S, cal: Calendar | None = None) -> None:
        self.lead = timedelta(seconds=max(lead_s, 0.0))
        self.calendar = cal or XNYS
        self._day: date | None = None
        self._session: Session | None = None
        self._lo = self._hi = _EPOCH  # the cached local date, as a UTC interval [lo, hi)

    def day(self, ts: datetime) -> date:
        """``ts``'s local date (naive = UTC); cached as a UTC interval, so a time within the
        last date looked up costs two comparisons and no time-zone conversion."""
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        if self._lo <= ts < self._hi:
            return self._day
        cal = self.calendar
        d = cal.local_date(ts)
        if d != self._day:
            self._day = d
            self._session = cal.session_for(d)
        self._lo = datetime.combine(d, time(0), cal.tz).astimezone(timezone.utc)
        self._hi = datetime.combine(d + timedelta(days=1), time(0), cal.tz).astimezone(timezone.utc)
        return d

    def session(self, ts: datetime) -> Session | None:
        """The session of ``ts``'s local date (cached per date)."""
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
        lookup per distinct local date; a unit test checks it equals
        :meth:`phase` and :meth:`session` bar by bar.
        """
        fill_ns = np.asarray(fill_ns, dtype="int64")
        days = self.calendar.local_days(fill_ns)
        uniq, inv = np.unique(days, return_inverse=True)
        opens = np.full(len(uniq), NO_SESSION, dtype="int64")
        closes = np.full(len(uniq), NO_SESSION, dtype="int64")
        for j, d in enumerate(uniq.tolist()):
            s = self.calendar.session_for(d)
            if s is not None:
                opens[j], closes[j] = _ns(s.open), _ns(s.close)
        open_ns, close_ns = opens[inv], closes[inv]
        lead_ns = self.lead // timedelta(microseconds=1) * 1000
        flat = (open_ns == NO_SESSION) | (fill_ns >= close_ns)
        if lead_ns:
            flat |= fill_ns >= close_ns - lead_ns
        phase = np.where(flat, -1, np.where(fill_ns < open_ns, 0, 1)).astype("int8")
        return phase, open_ns


__all__ = [
    "CALENDAR_NAME",
    "Calendar",
    "DAILY_BAR_SECONDS",
    "SESSION_SECONDS",
    "SUPPORTED_CALENDARS",
    "UnknownCalendar",
    "XNYS",
    "bar_times_ns",
    "bars_per_session",
    "calendar",
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
