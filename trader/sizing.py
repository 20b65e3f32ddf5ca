"""ATR-based position sizing with the seed runbook's intraday switch.

A new position is sized so that an adverse move of ``atr_multiple`` x ATR costs
``risk_fraction`` of the pod's capital::

    shares = floor(risk_fraction * capital / (atr_multiple * ATR))

capped by the position limit (``max_position_usd / price``). With the defaults
(0.2% of capital per 2 ATR) the cap is what binds on an ordinary minute; the
ATR term only shrinks the size when one-minute ATR exceeds about 0.2% of the
price (the open, news, a gap).

Which ATR (seed runbook: "intraday ATR near the open, regular ATR otherwise"):

* *regular* ATR: Wilder's average true range over ``period`` minute bars,
  carried across sessions (true range uses the previous close, so the
  overnight gap enters the first bar of the day);
* *intraday* ATR: the mean true range of today's bars only (the first bar's
  range is high - low, without the gap), used during the first
  ``intraday_window_s`` after the session open once ``min_intraday_bars`` of
  today are in; before that the regular ATR is used.

Every switch between the two is logged (logger ``quantramp.trader.sizing``)
and counted in :attr:`AtrSizer.switches`.

Bar intervals: both ATRs are in bars of the engine's interval (``EngineConfig.bar_seconds``),
USD per share. ``period`` 14 is 14 minutes on minute bars, 70 minutes on 5-minute bars and 14
sessions on daily bars (Wilder's own definition: J. W. Wilder, "New Concepts in Technical
Trading Systems", 1978, a 14-day ATR). The intraday window is in seconds, so on 5-minute
bars the first 30 minutes are 6 bars (the intraday ATR is used on the 5th and 6th). Daily
bars have one bar per session: the engine gives no session open (``None``) and only the
regular ATR is used; with the defaults a daily position is then about 5 % of capital when
the daily ATR is 2 % of the price (0.2 % of capital per 2 ATR).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Mapping

import numpy as np

from .session import NO_SESSION

log = logging.getLogger("quantramp.trader.sizing")

REGULAR = "regular"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _iso(ns: int) -> str:
    """ISO form of an aware UTC datetime (as ``datetime.isoformat``) from int ns since the epoch."""
    return (_EPOCH + timedelta(microseconds=ns // 1000)).isoformat()

INTRADAY = "intraday"


@dataclass(frozen=True, slots=True)
class SizingConfig:
    """risk_fraction: share of capital risked per ``atr_multiple`` ATRs (0..1). period: bars of
    the regular ATR. intraday_window_s: seconds after the open during which the intraday ATR
    is used. min_intraday_bars: bars of today needed before the intraday ATR is trusted."""

    risk_fraction: float = 0.002
    atr_multiple: float = 2.0
    period: int = 14
    intraday_window_s: float = 1800.0
    min_intraday_bars: int = 5

    def __post_init__(self) -> None:
        if not (0 < self.risk_fraction <= 1):
            raise ValueError(f"risk_fraction must be in (0, 1], got {self.risk_fraction}")
        if not (self.atr_multiple > 0 and math.isfinite(self.atr_multiple)):
            raise ValueError(f"atr_multiple must be > 0, got {self.atr_multiple}")
        if int(self.period) != self.period or self.period < 1:
            raise ValueError(f"period must be a whole number >= 1, got {self.period}")
        if not (self.intraday_window_s >= 0 and math.isfinite(self.intraday_window_s)):
            raise ValueError(f"intraday_window_s must be >= 0, got {self.intraday_window_s}")
        if int(self.min_intraday_bars) != self.min_intraday_bars or self.min_intraday_bars < 1:
            raise ValueError(f"min_intraday_bars must be a whole number >= 1, got {self.min_intraday_bars}")

    @staticmethod
    def from_env(env: Mapping[str, str]) -> "SizingConfig":
        """QR_SIZING_RISK_FRACTION, QR_SIZING_ATR_MULTIPLE, QR_ATR_PERIOD, QR_INTRADAY_ATR_MINUTES,
        QR_INTRADAY_ATR_MIN_BARS; missing ones take the defaults. Raises ValueError."""
        kw: dict = {}
        for var, name, conv in (
            ("QR_SIZING_RISK_FRACTION", "risk_fraction", float),
            ("QR_SIZING_ATR_MULTIPLE", "atr_multiple", float),
            ("QR_ATR_PERIOD", "period", int),
            ("QR_INTRADAY_ATR_MINUTES", "intraday_window_s", lambda s: 60.0 * float(s)),
            ("QR_INTRADAY_ATR_MIN_BARS", "min_intraday_bars", int),
        ):
            raw = env.get(var, "").strip()
            if raw:
                try:
                    kw[name] = conv(raw)
                except ValueError:
                    raise ValueError(f"{var}={raw!r} is not a number") from None
        return SizingConfig(**kw)


@dataclass(slots=True)
class AtrState:
    """What the sizer carries over a restart (JSON-able via :meth:`to_dict`).

    prev_close: last close (USD). n: bars seen. atr: Wilder ATR (NaN until
    ``period`` bars). warm_sum: sum of the first true ranges. day_open: ISO open
    of the current session ("" none). day_n / day_sum: today's bars and true
    ranges. source: ATR in use. switches: source changes so far.
    """

    prev_close: float = math.nan
    n: int = 0
    atr: float = math.nan
    warm_sum: float = 0.0
    day_open: str = ""
    day_n: int = 0
    day_sum: float = 0.0
    source: str = REGULAR
    switches: int = 0

    def to_dict(self) -> dict:
        """JSON-able dict (NaN as None)."""
        return {
            "prev_close": None if math.isnan(self.prev_close) else self.prev_close,
            "n": self.n,
            "atr": None if math.isnan(self.atr) else self.atr,
            "warm_sum": self.warm_sum,
            "day_open": self.day_open,
            "day_n": self.day_n,
            "day_sum": self.day_sum,
            "source": self.source,
            "switches": self.switches,
        }

    @staticmethod
    def from_dict(d: Mapping) -> "AtrState":
        """Inverse of :meth:`to_dict`."""
        def f(k: str) -> float:
            v = d.get(k)
            return math.nan if v is None else float(v)

        src = str(d.get("source", REGULAR))
        if src not in (REGULAR, INTRADAY):
            raise ValueError(f"source must be {REGULAR} or {INTRADAY}, got {src!r}")
        return AtrState(
            prev_close=f("prev_close"), n=int(d.get("n", 0)), atr=f("atr"), warm_sum=float(d.get("warm_sum", 0.0)),
            day_open=str(d.get("day_open", "")), day_n=int(d.get("day_n", 0)), day_sum=float(d.get("day_sum", 0.0)),
            source=src, switches=int(d.get("switches", 0)),
        )


class AtrSizer:
    """Streaming regular and intraday ATR and the position size they imply (see module docstring)."""

    __slots__ = ("config", "state", "_open")

    def __init__(self, config: SizingConfig | None = None, state: AtrState | None = None) -> None:
        self.config = config or SizingConfig()
        self.state = state if state is not None else AtrState()
        self._open: tuple[datetime | None, str] = (None, "")  # last session open and its ISO form

    @property
    def source(self) -> str:
        """"regular" or "intraday": the ATR in use."""
        return self.state.source

    @property
    def switches(self) -> int:
        """How many times the source switched."""
        return self.state.switches

    @property
    def regular_atr(self) -> float:
        """Wilder ATR over ``period`` bars (NaN until ``period`` bars are in)."""
        return self.state.atr

    @property
    def intraday_atr(self) -> float:
        """Mean true range of today's bars (NaN before the first bar of the session)."""
        st = self.state
        return st.day_sum / st.day_n if st.day_n else math.nan

    def update(self, ts: datetime, high: float, low: float, close: float, session_open: datetime | None) -> None:
        """Add one bar (USD). ``session_open``: open of the bar's session (None on a non-session)."""
        if session_open is not self._open[0]:
            self._open = (session_open, "" if session_open is None else session_open.isoformat())
        if not self._add(high, low, close, self._open[1]):
            return
        c = self.config
        near_open = (
            session_open is not None
            and (ts - session_open).total_seconds() < c.intraday_window_s
            and self.state.day_n >= c.min_intraday_bars
        )
        self._use(INTRADAY if near_open else REGULAR, ts)

    def update_run(
        self, ts_ns: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, session_open_ns: np.ndarray
    ) -> None:
        """:meth:`update` for each bar of a run, with times as int64 ns since the epoch (UTC).

        ``session_open_ns``: the session open per bar, :data:`NO_SESSION` for None.
        Same arithmetic in the same order as :meth:`update` (a unit test checks the
        states are equal); used by the batch replay (:mod:`.replay`).
        """
        c = self.config
        window, min_bars = c.intraday_window_s, c.min_intraday_bars
        last_open, iso = None, ""
        for t, h, lo, cl, o in zip(ts_ns.tolist(), high.tolist(), low.tolist(), close.tolist(), session_open_ns.tolist()):
            if o != last_open:
                last_open, iso = o, "" if o == NO_SESSION else _iso(o)
            if not self._add(h, lo, cl, iso):
                continue
            near_open = o != NO_SESSION and ((t - o) // 1000) / 10**6 < window and self.state.day_n >= min_bars
            src = INTRADAY if near_open else REGULAR
            if src != self.state.source:
                self._use(src, _EPOCH + timedelta(microseconds=t // 1000))

    def _add(self, high: float, low: float, close: float, day_open: str) -> bool:
        """Add one bar's true range to both ATRs; False (nothing changed) for a bad bar."""
        if not (math.isfinite(high) and math.isfinite(low) and math.isfinite(close)) or high < low:
            return False  # a bad bar leaves both ATRs as they were
        st = self.state
        pc = st.prev_close
        rng = high - low
        tr = rng if math.isnan(pc) else max(rng, abs(high - pc), abs(low - pc))
        st.prev_close = close
        p = self.config.period
        st.n += 1
        if st.n < p:
            st.warm_sum += tr
        elif st.n == p:
            st.atr = (st.warm_sum + tr) / p
        else:
            st.atr += (tr - st.atr) / p
        if day_open != st.day_open:
            st.day_open = day_open
            st.day_n = 0
            st.day_sum = 0.0
            tr = rng  # today's first bar: its own range, not the overnight gap
        st.day_n += 1
        st.day_sum += tr
        return True

    def _use(self, src: str, ts: datetime) -> None:
        st = self.state
        if src != st.source:
            log.info(
                "ATR source %s -> %s at %s (intraday %.4f, regular %.4f)",
                st.source, src, ts.isoformat(), self.intraday_atr, self.regular_atr,
            )
            st.source = src
            st.switches += 1

    @property
    def atr(self) -> float:
        """The ATR in use (see :attr:`source`), USD; NaN while unknown."""
        return self.intraday_atr if self.state.source == INTRADAY else self.state.atr

    def shares(self, capital_usd: float, price: float, max_position_usd: float) -> int:
        """Whole shares for a new position: ATR risk budget, capped by the position limit.

        0 when the price or the ATR is unknown or not positive (no size without a volatility).
        """
        if not (price > 0 and math.isfinite(price)):
            return 0
        cap = int(max_position_usd // price) if max_position_usd > 0 else 0
        atr = self.atr
        if not (atr > 0 and math.isfinite(atr)):
            return 0
        by_risk = self.config.risk_fraction * capital_usd / (self.config.atr_multiple * atr)
        return max(0, min(cap, int(by_risk)))


__all__ = ["AtrSizer", "AtrState", "INTRADAY", "NO_SESSION", "REGULAR", "SizingConfig"]
