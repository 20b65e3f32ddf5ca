"""Real daily bars for tests: the ``bokeh-sampledata`` stocks (test extra, pinned in pyproject).

``bokeh_sampledata.stocks`` holds unadjusted daily OHLCV of AAPL, MSFT, IBM and GOOG from
2000-03-01 to 2013-03-01 (public domain; dates as ``YYYY-MM-DD`` strings). The default window
2010-01-04 .. 2013-03-01 (:data:`SPLIT_FREE`) has no split of AAPL (7:1 on 2014-06-09) or MSFT
(last 2:1 on 2003-02-18), so the unadjusted prices are continuous there and the volume is
in the shares of the day.

:func:`daily_frame` gives the frame our loaders accept (a ``datetime`` column of dates, no
time of day, then open/high/low/close/volume): :func:`quantramp.trader.marketdata.parse_frame`
stamps each date at its XNYS session open; write it with ``to_csv(index=False)`` for
:class:`~quantramp.trader.barsource.FileBars`. :func:`daily_bars` is the parsed
:class:`~quantramp.trader.marketdata.Bars`, ready for ``barsource.load_frame`` (PostgreSQL).
"""

from __future__ import annotations

import pandas as pd

#: the split-free window of AAPL and MSFT in the sample, inclusive (New York dates)
SPLIT_FREE = ("2010-01-04", "2013-03-01")
TICKERS = ("AAPL", "MSFT", "IBM", "GOOG")
_COLUMNS = ("open", "high", "low", "close", "volume")


def daily_frame(symbol: str, start: str = SPLIT_FREE[0], end: str = SPLIT_FREE[1]) -> pd.DataFrame:
    """Daily OHLCV of ``symbol`` (one of :data:`TICKERS`) from ``start`` to ``end`` (inclusive,
    ``YYYY-MM-DD``), oldest first: columns ``datetime`` (the date, text ``YYYY-MM-DD``), open,
    high, low, close (USD, unadjusted), volume (shares). Raises ValueError for another symbol
    or an empty window; ImportError if bokeh-sampledata is not installed."""
    if symbol not in TICKERS:
        raise ValueError(f"no daily sample for {symbol!r}: one of {', '.join(TICKERS)}")
    from bokeh_sampledata import stocks

    data = getattr(stocks, symbol)
    frame = pd.DataFrame({"datetime": data["date"], **{c: data[c] for c in _COLUMNS}})
    frame = frame[(frame["datetime"] >= start) & (frame["datetime"] <= end)]
    if frame.empty:
        raise ValueError(f"no daily bars of {symbol} between {start} and {end}")
    return frame.sort_values("datetime").reset_index(drop=True)


def daily_bars(symbol: str, start: str = SPLIT_FREE[0], end: str = SPLIT_FREE[1]):
    """:func:`daily_frame` parsed by the loader (:func:`~quantramp.trader.marketdata.parse_frame`):
    :class:`~quantramp.trader.marketdata.Bars` stamped at the XNYS session opens (UTC)."""
    from quantramp.trader.marketdata import parse_frame

    return parse_frame(daily_frame(symbol, start, end), symbol, source=f"bokeh-sampledata {symbol}")


def write_csv(path, symbol: str, start: str = SPLIT_FREE[0], end: str = SPLIT_FREE[1]):
    """Write :func:`daily_frame` to ``path`` as CSV (``datetime`` column of dates); returns ``path``."""
    daily_frame(symbol, start, end).to_csv(path, index=False)
    return path
