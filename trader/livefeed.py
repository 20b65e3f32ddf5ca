"""Live bars for a trader pod that trades as the market moves (``QR_BARS_FOLLOW=true``, or
``QR_BARS_SOURCE=ib``), instead of replaying its history in a loop.

A :class:`LiveFeed` gives the history first (:meth:`LiveFeed.start`: the runtime warms its
engines up on it without trading, :meth:`~.engine.Engine.prime`), then every bar as it
completes (:meth:`LiveFeed.next`). Two feeds:

* :class:`PollingFeed`: a source that grows (PostgreSQL's ``minute_bars``, or a file), asked
  every ``poll_s`` seconds for the bars after the last one seen
  (:meth:`~.barsource.BarSource.since`, ``WHERE timestamp > last``), in a worker thread so the
  event loop (kill switch, Redis, IB) never waits on the database;
* :class:`IBFeed`: Interactive Brokers' bars through ``ib_async``:
  ``reqHistoricalData(keepUpToDate=True)`` per symbol on its own API connection (client id
  ``IB_CLIENT_ID + DATA_CLIENT_OFFSET``). IB sends the history and then keeps its last bar up
  to date; a bar is complete when the next one starts (``hasNewBar``). After a lost connection
  it reconnects (back-off) and subscribes again; bars missed meanwhile come with the new
  history and are delivered in order.

A feed never invents a bar: when its source fails, it logs why and delivers nothing, so the
runtime's wall-clock duties see a silent feed (not ready, no trading on stale prices).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any, Mapping

import numpy as np

from .barsource import BarSource, check_spacing
from .ib import IBConfig
from .marketdata import Bar, Bars, MarketDataError
from .session import session_for

log = logging.getLogger("quantramp.trader.livefeed")

#: the bars feed's IB API client id is the broker's plus this (one connection each, so a data
#: subscription and the order flow never share a client's reconnects)
DATA_CLIENT_OFFSET = 100
#: IB's bar size setting per bar length, seconds
IB_BAR_SIZES: Mapping[int, str] = {60: "1 min", 300: "5 mins", 900: "15 mins", 1800: "30 mins", 3600: "1 hour",
                                   86400: "1 day"}
#: how much history IB is asked for, per bar length (enough for every warm-up window)
IB_DURATIONS: Mapping[int, str] = {60: "2 D", 300: "5 D", 900: "10 D", 1800: "20 D", 3600: "30 D", 86400: "1 Y"}


def merged(history: Mapping[str, Bars], after: datetime | None = None) -> list[Bar]:
    """Every bar of ``history`` (symbol -> bars) starting strictly after ``after`` (aware UTC;
    None: all), in time order, each tagged with its symbol (ties in the order of ``history``)."""
    out: list[tuple[np.datetime64, int, Bar]] = []
    cut = None if after is None else np.datetime64(after.astimezone(timezone.utc).replace(tzinfo=None), "ns")
    for k, (sym, bars) in enumerate(history.items()):
        start = 0 if cut is None else int(np.searchsorted(bars.ts, cut, side="right"))
        for i in range(start, len(bars)):
            b = bars.bar(i)
            out.append((bars.ts[i], k, Bar(b.ts, b.open, b.high, b.low, b.close, b.volume, sym)))
    out.sort(key=lambda x: (x[0], x[1]))
    return [b for _, _, b in out]


class LiveFeed(ABC):
    """Bars as they complete (see the module docstring)."""

    #: why the source failed last ("" while it works)
    last_error: str = ""

    @abstractmethod
    def describe(self) -> str:
        """Where the bars come from, for logs (never a password)."""

    @abstractmethod
    async def start(self) -> dict[str, Bars]:
        """Connect and return each symbol's history (complete bars, oldest first). Raises
        :class:`~.marketdata.MarketDataError` when the source cannot give it (the pod refuses to
        trade)."""

    @abstractmethod
    async def next(self, stop: asyncio.Event) -> list[Bar]:
        """The bars completed since the last call, in time order, tagged with their symbol; waits
        until there is one or ``stop`` is set (then returns [])."""

    async def close(self) -> None:
        """Let go of the source."""


class PollingFeed(LiveFeed):
    """A growing :class:`~.barsource.BarSource` asked every ``poll_s`` seconds for what is new
    (at most ``batch`` bars per symbol per poll). ``bar_seconds``: the bar length the bars must
    have (:func:`~.barsource.check_spacing` on the history)."""

    def __init__(self, source: BarSource, symbols: tuple[str, ...], bar_seconds: int, *, poll_s: float = 1.0,
                 batch: int = 1000) -> None:
        if poll_s <= 0 or batch < 1:
            raise ValueError("need poll_s > 0 and batch >= 1")
        self.source = source
        self.symbols = symbols
        self.bar_seconds = bar_seconds
        self.poll_s = poll_s
        self.batch = batch
        self._last: dict[str, datetime | None] = {s: None for s in symbols}
        self._failing = False

    def describe(self) -> str:
        return f"{self.source.describe()}, followed every {self.poll_s:g} s"

    async def start(self) -> dict[str, Bars]:
        history = {}
        for sym in self.symbols:
            bars = await asyncio.to_thread(self.source.history, sym)
            history[sym] = check_spacing(bars, self.bar_seconds, self.source.describe(), self.source.calendar_of(sym))
            self._last[sym] = bars.bar(len(bars) - 1).ts
        return history

    async def next(self, stop: asyncio.Event) -> list[Bar]:
        while not stop.is_set():
            new: dict[str, Bars] = {}
            try:
                for sym in self.symbols:
                    bars = await asyncio.to_thread(self.source.since, sym, self._last[sym], self.batch)
                    if len(bars):
                        new[sym] = bars
            except MarketDataError as exc:
                if not self._failing:
                    log.error("bars from %s failed (%s): no bars until it answers", self.source.describe(), exc)
                self._failing, self.last_error = True, str(exc)
                new = {}
            else:
                if self._failing:
                    log.warning("bars from %s answer again", self.source.describe())
                self._failing, self.last_error = False, ""
            if new:
                for sym, bars in new.items():
                    self._last[sym] = bars.bar(len(bars) - 1).ts
                return merged(new)
            try:
                await asyncio.wait_for(stop.wait(), self.poll_s)
            except asyncio.TimeoutError:
                pass
        return []


def _ib_bar(b: Any, symbol: str) -> Bar:
    """An ``ib_async`` BarData (date: aware datetime with formatDate=2, or a date for daily bars) as a Bar."""
    d = b.date
    if not isinstance(d, datetime):  # a daily bar: its session's open (XNYS)
        session = session_for(d)
        if session is None:
            raise MarketDataError(f"IB daily bar of {symbol} on {d}, not an XNYS session")
        ts = session.open
    else:
        ts = d if d.tzinfo else d.replace(tzinfo=timezone.utc)
    return Bar(ts.astimezone(timezone.utc), float(b.open), float(b.high), float(b.low), float(b.close),
               float(b.volume), symbol)


class IBFeed(LiveFeed):
    """Interactive Brokers' bars (see the module docstring). ``config``: the pod's IB settings (the
    data connection uses client id ``config.client_id + DATA_CLIENT_OFFSET``); ``ib``: an
    ``ib_async.IB`` (tests), else one is made."""

    def __init__(self, config: IBConfig, symbols: tuple[str, ...], bar_seconds: int, *, ib: Any = None) -> None:
        if bar_seconds not in IB_BAR_SIZES:
            raise ValueError(f"IB has no {bar_seconds} s bars: one of {sorted(IB_BAR_SIZES)}")
        if ib is None:
            from ib_async import IB

            ib = IB()
        self.config = config
        self.symbols = symbols
        self.bar_seconds = bar_seconds
        self.ib = ib
        self._queue: asyncio.Queue[Bar] = asyncio.Queue()
        self._last: dict[str, datetime | None] = {s: None for s in symbols}
        self._subs: list[Any] = []
        self._stopping = False
        self._reconnect: asyncio.Task | None = None
        ib.disconnectedEvent += self._on_disconnected

    def describe(self) -> str:
        c = self.config
        return f"Interactive Brokers at {c.host}:{c.api_port} ({IB_BAR_SIZES[self.bar_seconds]} bars, keepUpToDate)"

    async def _subscribe(self) -> dict[str, Bars]:
        from ib_async import Stock

        c = self.config
        if not self.ib.isConnected():
            await self.ib.connectAsync(c.host, c.api_port, c.client_id + DATA_CLIENT_OFFSET,
                                       timeout=c.connect_timeout_s, readonly=True)
        history: dict[str, Bars] = {}
        self._subs = []
        for sym in self.symbols:
            bars = await self.ib.reqHistoricalDataAsync(
                Stock(sym, c.exchange, c.currency), "", IB_DURATIONS[self.bar_seconds], IB_BAR_SIZES[self.bar_seconds],
                "TRADES", useRTH=True, formatDate=2, keepUpToDate=True, timeout=c.reconcile_timeout_s * 4,
            )
            if bars is None or len(bars) < 2:
                raise MarketDataError(f"{self.describe()}: no bars for symbol {sym!r}")
            bars.updateEvent += (lambda bl, new, s=sym: self._on_update(bl, new, s))
            self._subs.append(bars)
            done = [_ib_bar(b, sym) for b in list(bars)[:-1]]  # the last one is still forming
            history[sym] = _as_bars(sym, done)
        return history

    async def start(self) -> dict[str, Bars]:
        try:
            history = await self._subscribe()
        except (OSError, asyncio.TimeoutError, ConnectionError) as exc:
            raise MarketDataError(f"{self.describe()}: {type(exc).__name__}: {exc}") from exc
        for sym, bars in history.items():
            history[sym] = check_spacing(bars, self.bar_seconds, self.describe())
            self._last[sym] = bars.bar(len(bars) - 1).ts
        return history

    def _on_update(self, bars: Any, has_new_bar: bool, symbol: str) -> None:
        if not has_new_bar or len(bars) < 2:
            return
        bar = _ib_bar(bars[-2], symbol)
        last = self._last[symbol]
        if last is None or bar.ts > last:
            self._last[symbol] = bar.ts
            self._queue.put_nowait(bar)

    def _on_disconnected(self) -> None:
        if self._stopping:
            return
        self.last_error = "IB connection lost"
        log.error("%s: connection lost, no bars until it is back", self.describe())
        if self._reconnect is None or self._reconnect.done():
            try:
                self._reconnect = asyncio.get_running_loop().create_task(self._resubscribe())
            except RuntimeError:
                pass

    async def _resubscribe(self) -> None:
        attempt = 0
        while not self._stopping:
            await asyncio.sleep(self.config.backoff(attempt))
            attempt += 1
            try:
                history = await self._subscribe()
            except Exception as exc:  # noqa: BLE001 - any failure: back off and try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.ib.isConnected():
                    self.ib.disconnect()
                continue
            missed = merged(history)
            for bar in missed:  # the bars completed while away, in order
                last = self._last[bar.symbol]
                if last is None or bar.ts > last:
                    self._last[bar.symbol] = bar.ts
                    self._queue.put_nowait(bar)
            self.last_error = ""
            log.warning("%s: connection back, %d missed bars delivered", self.describe(), len(missed))
            return

    async def next(self, stop: asyncio.Event) -> list[Bar]:
        getter = asyncio.ensure_future(self._queue.get())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not getter.done():
            getter.cancel()
            return []
        out = [getter.result()]
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        out.sort(key=lambda b: (b.ts, self.symbols.index(b.symbol)))
        return out

    async def close(self) -> None:
        self._stopping = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        self.ib.disconnect()


def _as_bars(symbol: str, bars: list[Bar]) -> Bars:
    """``bars`` (one symbol's, oldest first) as :class:`~.marketdata.Bars`."""
    ts = np.array([np.datetime64(b.ts.astimezone(timezone.utc).replace(tzinfo=None), "ns") for b in bars],
                  dtype="datetime64[ns]")
    col = lambda f: np.array([getattr(b, f) for b in bars], dtype=np.float64)  # noqa: E731
    return Bars(symbol, ts, col("open"), col("high"), col("low"), col("close"), col("volume"))
