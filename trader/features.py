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

Feature specification (:class:`FeatureSpec`): the table above is the *default* spec. A
model may be trained on another selection and order of the built-in features and other
window lengths: ``ret_K`` for any horizon K (bars), ``range``, ``close_loc``, ``volume_z``,
with ``vol_window`` (returns in sigma) and ``volume_window`` (bars in the volume z-score).
``quantramp-trader train`` writes the spec into the MLflow model's metadata
(:data:`SPEC_METADATA_KEY`); the trader's loader reads it back and serves the model with
``spec.stream()``. A model registered without a spec means :class:`FeatureSpec()` (the six
features above, 30-bar windows). :func:`feature_matrix` and :class:`FeatureStream` with the
default spec do exactly what they did before specs existed (the same float operations in
the same order).
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field, field_validator

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

#: the ``format`` of a serialised :class:`FeatureSpec`
SPEC_FORMAT = "quantramp.features/v1"
#: key of the spec in an MLflow model's metadata (``log_model(metadata={SPEC_METADATA_KEY: spec.to_dict()})``)
SPEC_METADATA_KEY = "quantramp_feature_spec"
#: the largest window or return horizon a spec may ask for, in bars (about 5 sessions of minute bars)
MAX_WINDOW = 2000
#: built-in features without a parameter in their name
PLAIN_FEATURES: tuple[str, ...] = ("range", "close_loc", "volume_z")
_RET_RE = re.compile(r"^ret_([1-9][0-9]*)$")


class FeatureSpec(BaseModel):
    """Which built-in features a model takes, in which order, with which windows (JSON-able).

    ``features``: names, in the model's column order, each ``ret_K`` (log return over K bars
    / (sigma * sqrt(K)), 1 <= K <= :data:`MAX_WINDOW`), ``range``, ``close_loc`` or
    ``volume_z`` (see the module docstring), no repeats. ``vol_window``: one-bar returns in
    sigma (>= 2). ``volume_window``: bars of log(1 + volume) in the volume z-score (>= 2).
    The default instance is the six features the trader has always computed.

    Serialised as ``{"format": "quantramp.features/v1", "features": [...], "vol_window": 30,
    "volume_window": 30}`` (:meth:`to_dict`, :meth:`to_json`); parsing (:meth:`model_validate`,
    :meth:`from_json`) raises ``pydantic.ValidationError`` naming the bad field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["quantramp.features/v1"] = SPEC_FORMAT
    features: tuple[str, ...] = Field(FEATURE_NAMES, min_length=1)
    vol_window: int = Field(VOL_WINDOW, ge=2, le=MAX_WINDOW)
    volume_window: int = Field(VOL_WINDOW, ge=2, le=MAX_WINDOW)

    @field_validator("features")
    @classmethod
    def _known_features(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        bad = []
        for name in names:
            m = _RET_RE.match(name)
            if m is None and name not in PLAIN_FEATURES:
                bad.append(f"{name!r} is not a built-in feature (ret_K, {', '.join(PLAIN_FEATURES)})")
            elif m is not None and int(m.group(1)) > MAX_WINDOW:
                bad.append(f"{name!r}: the horizon is above {MAX_WINDOW} bars")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            bad.append(f"repeated features {dup}")
        if bad:
            raise ValueError("; ".join(bad))
        return names

    @property
    def names(self) -> tuple[str, ...]:
        """The feature (column) names in order."""
        return self.features

    @property
    def n_features(self) -> int:
        """Number of columns of a feature row."""
        return len(self.features)

    @property
    def horizons(self) -> tuple[int, ...]:
        """Return horizons K (bars) of the ``ret_K`` features, in column order."""
        return tuple(int(m.group(1)) for m in map(_RET_RE.match, self.features) if m is not None)

    @property
    def lookback(self) -> int:
        """Bars needed before the first row is defined: max(vol_window + 1, volume_window, K + 1)."""
        return max(self.vol_window + 1, self.volume_window, *(k + 1 for k in self.horizons))

    @property
    def is_default(self) -> bool:
        """True for the six built-in features with today's windows."""
        return self == DEFAULT_SPEC

    def to_dict(self) -> dict:
        """Plain JSON values (lists, ints, strings), e.g. for MLflow model metadata."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> "FeatureSpec":
        """Parse :meth:`to_json` output; ``pydantic.ValidationError`` for a bad spec."""
        return cls.model_validate_json(text)

    def stream(self) -> "FeatureStream":
        """A fresh :class:`FeatureStream` computing these features (what the trader serves with)."""
        return FeatureStream(self)

    def matrix(self, high, low, close, volume) -> np.ndarray:
        """:func:`feature_matrix` with this spec: shape (n, n_features)."""
        return feature_matrix(high, low, close, volume, self)


DEFAULT_SPEC = FeatureSpec()


def feature_matrix(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, spec: FeatureSpec | None = None
) -> np.ndarray:
    """Features for every bar of a series.

    Args: ``high``, ``low``, ``close`` (USD, > 0) and ``volume`` (shares, >= 0),
    each shape (n,), oldest first; ``spec`` which features (default :data:`DEFAULT_SPEC`).

    Returns: float64 array of shape (n, spec.n_features), columns in ``spec.features``
    order (:data:`FEATURE_NAMES` by default). Rows ``0 .. spec.lookback - 2`` (warm-up) are
    NaN; every later row is finite. Raises ValueError for arrays of different lengths.
    """
    spec = DEFAULT_SPEC if spec is None else spec
    high = np.asarray(high, dtype=float)
    low = np.asarray(low, dtype=float)
    close = np.asarray(close, dtype=float)
    volume = np.asarray(volume, dtype=float)
    n = close.shape[0]
    if not (high.shape == low.shape == close.shape == volume.shape == (n,)):
        raise ValueError("high, low, close and volume must be 1-D arrays of the same length")
    lookback, vw = spec.lookback, spec.vol_window
    out = np.full((n, spec.n_features), np.nan)
    if n < lookback:
        return out

    logc = np.log(close)
    r1 = np.diff(logc)  # r1[j] is the return into bar j + 1
    # sigma of row t uses the vw returns into bars t-vw+1 .. t: window t - vw of r1
    sigma = sliding_window_view(r1, vw).std(axis=1, ddof=1)
    sigma = np.maximum(sigma, MIN_SIGMA)
    rows = np.arange(lookback - 1, n)
    if lookback - 1 != vw:
        sigma = sigma[rows - vw]

    for col, name in enumerate(spec.features):
        m = _RET_RE.match(name)
        if m is not None:
            k = int(m.group(1))
            out[rows, col] = (logc[rows] - logc[rows - k]) / (sigma * np.sqrt(k))
        elif name == "range":
            out[rows, col] = np.log(high[rows] / low[rows]) / sigma
        elif name == "close_loc":
            span = high[rows] - low[rows]
            with np.errstate(invalid="ignore", divide="ignore"):
                loc = np.where(span > 0, (2.0 * close[rows] - high[rows] - low[rows]) / span, 0.0)
            out[rows, col] = loc
        else:  # volume_z
            ww = spec.volume_window
            lv = np.log1p(volume)
            win = sliding_window_view(lv, ww)[rows - ww + 1]
            mu = win.mean(axis=1)
            sd = win.std(axis=1, ddof=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[rows, col] = np.where(sd > 0, (lv[rows] - mu) / sd, 0.0)

    np.clip(out, -FEATURE_CLIP, FEATURE_CLIP, out=out)
    return out


def bars_features(bars, spec: FeatureSpec | None = None) -> np.ndarray:
    """:func:`feature_matrix` on a :class:`~quantramp.trader.marketdata.Bars`; shape (len(bars), spec.n_features)."""
    return feature_matrix(bars.high, bars.low, bars.close, bars.volume, spec)


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


#: column kinds of a stream's plan
_K_RET, _K_RANGE, _K_LOC, _K_VOLZ = 0, 1, 2, 3


class FeatureStream:
    """Incremental form of :func:`feature_matrix` for serving.

    ``FeatureStream(spec)`` (default :data:`DEFAULT_SPEC`) keeps the last ``spec.lookback``
    bars; :meth:`update` returns the feature row of the newest bar (shape
    (spec.n_features,)) equal to the corresponding row of :func:`feature_matrix` with the
    same spec on the whole series, or ``None`` during warm-up.
    """

    def __init__(self, spec: FeatureSpec | None = None) -> None:
        self.spec = spec = DEFAULT_SPEC if spec is None else spec
        self.lookback = n = spec.lookback
        self._high: deque[float] = deque(maxlen=n)
        self._low: deque[float] = deque(maxlen=n)
        self._close: deque[float] = deque(maxlen=n)
        self._volume: deque[float] = deque(maxlen=n)
        # derived per bar, once: log closes, one-bar log returns, log(1 + volume)
        self._logc: deque[float] = deque(maxlen=n)
        self._r1: deque[float] = deque(maxlen=spec.vol_window)
        self._lv: deque[float] = deque(maxlen=spec.volume_window)
        plan = []
        for name in spec.features:
            m = _RET_RE.match(name)
            if m is not None:
                k = int(m.group(1))
                plan.append((_K_RET, k, math.sqrt(k)))
            else:
                plan.append(({"range": _K_RANGE, "close_loc": _K_LOC}.get(name, _K_VOLZ), 0, 0.0))
        self._plan = tuple(plan)
        self._volz = any(kind == _K_VOLZ for kind, _, _ in plan)

    def window(self) -> dict[str, list[float]]:
        """The bars held (at most ``lookback``, oldest first): {"high", "low", "close", "volume": [...]}."""
        return {k: list(getattr(self, "_" + k)) for k in ("high", "low", "close", "volume")}

    @classmethod
    def from_window(cls, high, low, close, volume, spec: FeatureSpec | None = None) -> "FeatureStream":
        """A stream for ``spec`` (default :data:`DEFAULT_SPEC`) holding these bars (equal-length
        sequences, oldest first; the last ``spec.lookback`` count), as if they had been
        :meth:`update`-d one by one."""
        fs = cls(spec)
        n = fs.lookback
        for h, lo, c, v in zip(*(list(a)[-n:] for a in (high, low, close, volume))):
            fs.update(h, lo, c, v)
        return fs

    def refilled(self, high, low, close, volume) -> "FeatureStream":
        """:meth:`from_window` with this stream's spec (use it to restore a saved window)."""
        return type(self).from_window(high, low, close, volume, self.spec)

    @property
    def ready(self) -> bool:
        """True once ``lookback`` bars have been seen."""
        return len(self._close) == self.lookback

    def update(self, high: float, low: float, close: float, volume: float) -> np.ndarray | None:
        """Add one bar (USD prices, shares); return its features, shape (spec.n_features,), or None."""
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
        if len(self._close) != self.lookback:
            return None

        _, sigma = _mean_std(list(self._r1))
        if sigma < MIN_SIGMA:  # np.maximum: a NaN sigma stays NaN
            sigma = MIN_SIGMA
        if self._volz:
            mu, sd = _mean_std(list(self._lv))
        row = []
        for kind, k, sq in self._plan:
            if kind == _K_RET:
                row.append((logc - logcs[-1 - k]) / (sigma * sq))
            elif kind == _K_RANGE:
                row.append(log_range / sigma)
            elif kind == _K_LOC:
                span = high - low
                row.append((2.0 * close - high - low) / span if span > 0 else 0.0)
            else:
                row.append((lv - mu) / sd if sd > 0 else 0.0)
        # np.clip to [-FEATURE_CLIP, FEATURE_CLIP]; NaN passes through
        c = FEATURE_CLIP
        return np.array([v if -c <= v <= c else (c if v > c else (-c if v < -c else v)) for v in row])


def stream_for(model) -> FeatureStream:
    """A fresh :class:`FeatureStream` for a loaded model: ``model.feature_spec.stream()``, or the
    default spec's stream for an object without a ``feature_spec`` (a test double, a bare estimator)."""
    spec = getattr(model, "feature_spec", None)
    return FeatureStream(spec if isinstance(spec, FeatureSpec) else None)
