"""Features shared by training and serving (one function, no train/serve skew).

:func:`feature_matrix` is the only place features are computed. Training calls
it on a whole series (hourly bars); serving keeps the last :data:`LOOKBACK`
bars in :class:`FeatureStream` and calls the same function on that window,
taking the last row. Every feature of row ``t`` depends only on bars
``t - LOOKBACK + 1 .. t``, so both paths give the same numbers.

Serving speed: :class:`FeatureStream` does not run :func:`feature_matrix` on
the 31-bar window every bar (dozens of small numpy calls, tens of microseconds
of per-call overhead). It keeps each bar's log close, one-bar return and
log(1 + volume), computed once, and evaluates the newest row with scalar float
arithmetic doing the same IEEE operations in the same order as
:func:`feature_matrix` on that window: the logarithms go through the same numpy
ufuncs, and window sums replicate numpy's pairwise summation
(:func:`_pairwise_sum`). The unit tests check it bit for bit against
``feature_matrix(window)[-1]`` on the real bars, and against the batch to 1e-12.

All features are dimensionless (volatility-normalised), so a model trained on
1-hour bars can be served on 1-minute bars of the same stock:

=========  ===============================================================
ret_1      log return over 1 bar / (sigma * sqrt(1))
ret_5      log return over 5 bars / (sigma * sqrt(5))
ret_15     log return over 15 bars / (sigma * sqrt(15))
range      log(high / low) of the bar / sigma
close_loc  where the close sits in the bar's range: -1 at the low, +1 at the high
volume_z   z-score of log(1 + volume) against the last VOL_WINDOW bars
=========  ===============================================================

sigma is the sample standard deviation (ddof=1) of the last
:data:`VOL_WINDOW` one-bar log returns. Values are clipped to
``[-FEATURE_CLIP, FEATURE_CLIP]``.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

FEATURE_NAMES: tuple[str, ...] = ("ret_1", "ret_5", "ret_15", "range", "close_loc", "volume_z")
N_FEATURES = len(FEATURE_NAMES)
#: number of one-bar returns in the volatility and volume windows
VOL_WINDOW = 30
#: bars needed before the first feature row is defined (VOL_WINDOW returns need VOL_WINDOW + 1 closes)
LOOKBACK = VOL_WINDOW + 1
RETURN_HORIZONS = (1, 5, 15)
FEATURE_CLIP = 8.0
#: floor on sigma (log-return units) so a flat window does not divide by zero
MIN_SIGMA = 1e-5


def feature_matrix(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """Features for every bar of a series.

    Args: ``high``, ``low``, ``close`` (USD, > 0) and ``volume`` (shares, >= 0),
    each shape (n,), oldest first.

    Returns: float64 array of shape (n, N_FEATURES), columns in
    :data:`FEATURE_NAMES` order. Rows ``0 .. LOOKBACK - 2`` (warm-up) are NaN;
    every later row is finite.
    """
    high = np.asarray(high, dtype=float)
    low = np.asarray(low, dtype=float)
    close = np.asarray(close, dtype=float)
    volume = np.asarray(volume, dtype=float)
    n = close.shape[0]
    if not (high.shape == low.shape == close.shape == volume.shape == (n,)):
        raise ValueError("high, low, close and volume must be 1-D arrays of the same length")
    out = np.full((n, N_FEATURES), np.nan)
    if n < LOOKBACK:
        return out

    logc = np.log(close)
    r1 = np.diff(logc)  # r1[j] is the return into bar j + 1
    # sigma for rows t = LOOKBACK-1 .. n-1 uses returns into bars t-VOL_WINDOW+1 .. t
    sigma = sliding_window_view(r1, VOL_WINDOW).std(axis=1, ddof=1)
    sigma = np.maximum(sigma, MIN_SIGMA)
    rows = np.arange(LOOKBACK - 1, n)

    for col, k in enumerate(RETURN_HORIZONS):
        out[rows, col] = (logc[rows] - logc[rows - k]) / (sigma * np.sqrt(k))

    out[rows, 3] = np.log(high[rows] / low[rows]) / sigma

    span = high[rows] - low[rows]
    with np.errstate(invalid="ignore", divide="ignore"):
        loc = np.where(span > 0, (2.0 * close[rows] - high[rows] - low[rows]) / span, 0.0)
    out[rows, 4] = loc

    lv = np.log1p(volume)
    win = sliding_window_view(lv, VOL_WINDOW)[rows - VOL_WINDOW + 1]
    mu = win.mean(axis=1)
    sd = win.std(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[rows, 5] = np.where(sd > 0, (lv[rows] - mu) / sd, 0.0)

    np.clip(out, -FEATURE_CLIP, FEATURE_CLIP, out=out)
    return out


def bars_features(bars) -> np.ndarray:
    """:func:`feature_matrix` on a :class:`~quantramp.trader.marketdata.Bars`; shape (len(bars), N_FEATURES)."""
    return feature_matrix(bars.high, bars.low, bars.close, bars.volume)


def next_bar_up(close: np.ndarray) -> np.ndarray:
    """Training label: 1.0 if bar t+1 closes above bar t, else 0.0; NaN for the last bar. Shape (n,)."""
    close = np.asarray(close, dtype=float)
    y = np.full(close.shape, np.nan)
    y[:-1] = (close[1:] > close[:-1]).astype(float)
    return y


def _pairwise_sum(a: list[float]) -> float:
    """Sum of the floats in ``a`` in numpy's order for a contiguous float64 ``add.reduce``.

    numpy starts from the additive identity 0.0 and adds its pairwise sum: below
    8 values a plain running sum; up to 128, eight interleaved accumulators
    combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the tail
    one by one; above 128, the two halves (the first a multiple of 8) recursively.
    """
    n = len(a)
    if n < 8:
        res = 0.0
        for x in a:
            res += x
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[:8]
        end = n - (n % 8)
        for i in range(8, end, 8):
            b0, b1, b2, b3, b4, b5, b6, b7 = a[i : i + 8]
            r0 += b0
            r1 += b1
            r2 += b2
            r3 += b3
            r4 += b4
            r5 += b5
            r6 += b6
            r7 += b7
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for x in a[end:]:
            res += x
        return 0.0 + res
    n2 = n // 2
    n2 -= n2 % 8
    return 0.0 + (_pairwise_sum(a[:n2]) + _pairwise_sum(a[n2:]))


def _mean_std(a: list[float]) -> tuple[float, float]:
    """``(np.mean(a), np.std(a, ddof=1))`` of a non-empty list, same operations in the same order."""
    n = len(a)
    mean = _pairwise_sum(a) / n
    if n < 2:  # numpy: 0 / 0 -> NaN
        return mean, math.nan
    var = _pairwise_sum([(d := x - mean) * d for x in a]) / (n - 1)
    return mean, math.sqrt(var)


#: (k, sqrt(k)) per return horizon
_HORIZONS = tuple((k, math.sqrt(k)) for k in RETURN_HORIZONS)


class FeatureStream:
    """Incremental form of :func:`feature_matrix` for serving.

    Keeps the last :data:`LOOKBACK` bars; :meth:`update` returns the feature row
    of the newest bar (shape (N_FEATURES,)) equal to the corresponding row of
    :func:`feature_matrix` on the whole series, or ``None`` during warm-up.
    """

    def __init__(self) -> None:
        self._high: deque[float] = deque(maxlen=LOOKBACK)
        self._low: deque[float] = deque(maxlen=LOOKBACK)
        self._close: deque[float] = deque(maxlen=LOOKBACK)
        self._volume: deque[float] = deque(maxlen=LOOKBACK)
        # derived per bar, once: log closes, one-bar log returns, log(1 + volume)
        self._logc: deque[float] = deque(maxlen=LOOKBACK)
        self._r1: deque[float] = deque(maxlen=VOL_WINDOW)
        self._lv: deque[float] = deque(maxlen=VOL_WINDOW)

    def window(self) -> dict[str, list[float]]:
        """The bars held (at most LOOKBACK, oldest first): {"high", "low", "close", "volume": [...]}."""
        return {k: list(getattr(self, "_" + k)) for k in ("high", "low", "close", "volume")}

    @classmethod
    def from_window(cls, high, low, close, volume) -> "FeatureStream":
        """A stream holding these bars (equal-length sequences, oldest first; the last LOOKBACK count),
        as if they had been :meth:`update`-d one by one."""
        fs = cls()
        n = LOOKBACK
        for h, lo, c, v in zip(*(list(a)[-n:] for a in (high, low, close, volume))):
            fs.update(h, lo, c, v)
        return fs

    @property
    def ready(self) -> bool:
        """True once LOOKBACK bars have been seen."""
        return len(self._close) == LOOKBACK

    def update(self, high: float, low: float, close: float, volume: float) -> np.ndarray | None:
        """Add one bar (USD prices, shares); return its features, shape (N_FEATURES,), or None."""
        high, low, close, volume = float(high), float(low), float(close), float(volume)
        self._high.append(high)
        self._low.append(low)
        self._close.append(close)
        self._volume.append(volume)
        # the same numpy ufuncs as feature_matrix (np.log / np.log1p on float64 arrays)
        ratio = high / low if low != 0 else float(np.float64(high) / np.float64(low))
        logc, log_range = np.log(np.array((close, ratio))).tolist()
        lv = np.log1p(np.array((volume,))).tolist()[0]
        logcs = self._logc
        if logcs:
            self._r1.append(logc - logcs[-1])
        logcs.append(logc)
        self._lv.append(lv)
        if len(self._close) != LOOKBACK:
            return None

        _, sigma = _mean_std(list(self._r1))
        if sigma < MIN_SIGMA:  # np.maximum: a NaN sigma stays NaN
            sigma = MIN_SIGMA
        span = high - low
        mu, sd = _mean_std(list(self._lv))
        row = [(logc - logcs[-1 - k]) / (sigma * sq) for k, sq in _HORIZONS]
        row += (
            log_range / sigma,
            (2.0 * close - high - low) / span if span > 0 else 0.0,
            (lv - mu) / sd if sd > 0 else 0.0,
        )
        # np.clip to [-FEATURE_CLIP, FEATURE_CLIP]; NaN passes through
        c = FEATURE_CLIP
        return np.array([v if -c <= v <= c else (c if v > c else (-c if v < -c else v)) for v in row])
