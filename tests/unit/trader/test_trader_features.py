"""Features: one function for training and serving; batch == streaming."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from quantramp.trader import features as F
from quantramp.trader.marketdata import load_hourly_bars, load_minute_bars


def _synthetic(n: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    spread = np.abs(rng.normal(0, 0.001, n)) * close
    high = close + spread + 0.01
    low = close - spread - 0.01
    volume = rng.integers(0, 10_000, n).astype(float)
    return high, low, close, volume


def test_shape_and_warm_up():
    h, l, c, v = _synthetic(100)
    X = F.feature_matrix(h, l, c, v)
    assert X.shape == (100, F.N_FEATURES) == (100, len(F.FEATURE_NAMES))
    assert np.isnan(X[: F.LOOKBACK - 1]).all()
    assert np.isfinite(X[F.LOOKBACK - 1 :]).all()
    assert np.abs(X[F.LOOKBACK - 1 :]).max() <= F.FEATURE_CLIP


def test_short_series_is_all_nan():
    h, l, c, v = _synthetic(F.LOOKBACK - 1)
    assert np.isnan(F.feature_matrix(h, l, c, v)).all()


def test_values_match_a_hand_computation():
    h, l, c, v = _synthetic(60, seed=3)
    X = F.feature_matrix(h, l, c, v)
    t = 45
    rets = [math.log(c[j] / c[j - 1]) for j in range(t - F.VOL_WINDOW + 1, t + 1)]
    sigma = statistics.stdev(rets)
    assert X[t, 0] == pytest.approx(math.log(c[t] / c[t - 1]) / sigma, rel=1e-9)
    assert X[t, 1] == pytest.approx(math.log(c[t] / c[t - 5]) / (sigma * math.sqrt(5)), rel=1e-9)
    assert X[t, 2] == pytest.approx(math.log(c[t] / c[t - 15]) / (sigma * math.sqrt(15)), rel=1e-9)
    assert X[t, 3] == pytest.approx(math.log(h[t] / l[t]) / sigma, rel=1e-9)
    assert X[t, 4] == pytest.approx((2 * c[t] - h[t] - l[t]) / (h[t] - l[t]), rel=1e-9)
    lv = [math.log1p(x) for x in v[t - F.VOL_WINDOW + 1 : t + 1]]
    assert X[t, 5] == pytest.approx((lv[-1] - statistics.mean(lv)) / statistics.stdev(lv), rel=1e-9)


def test_features_are_scale_free():
    # volatility normalisation: the same path at 10x the price gives the same features
    h, l, c, v = _synthetic(80)
    a = F.feature_matrix(h, l, c, v)
    b = F.feature_matrix(10 * h, 10 * l, 10 * c, v)
    np.testing.assert_allclose(a[F.LOOKBACK - 1 :], b[F.LOOKBACK - 1 :], rtol=1e-9, atol=1e-12)


def test_flat_bars_do_not_divide_by_zero():
    n = 40
    c = np.full(n, 50.0)
    X = F.feature_matrix(c, c, c, np.zeros(n))
    assert np.isfinite(X[F.LOOKBACK - 1 :]).all()
    assert (X[F.LOOKBACK - 1 :] == 0).all()


def _stream_all(h, l, c, v):
    s = F.FeatureStream()
    rows = []
    for i in range(len(c)):
        rows.append(s.update(h[i], l[i], c[i], v[i]))
    return rows


@pytest.mark.parametrize("loader", [load_minute_bars, load_hourly_bars])
def test_streaming_equals_batch_on_real_bars(loader):
    bars = loader()
    batch = F.bars_features(bars)
    rows = _stream_all(bars.high, bars.low, bars.close, bars.volume)
    assert all(r is None for r in rows[: F.LOOKBACK - 1])
    stream = np.vstack(rows[F.LOOKBACK - 1 :])
    assert stream.shape == batch[F.LOOKBACK - 1 :].shape
    np.testing.assert_allclose(stream, batch[F.LOOKBACK - 1 :], rtol=1e-12, atol=1e-12)


def test_streaming_only_looks_back():
    # changing a bar far in the past (beyond LOOKBACK) does not change today's features
    h, l, c, v = _synthetic(100)
    c2 = c.copy()
    c2[10] *= 1.05
    h2 = np.maximum(h, c2)
    a = F.feature_matrix(h, l, c, v)
    b = F.feature_matrix(h2, l, c2, v)
    np.testing.assert_array_equal(a[10 + F.LOOKBACK :], b[10 + F.LOOKBACK :])
    assert not np.allclose(a[10], b[10])


def test_next_bar_up_label():
    y = F.next_bar_up(np.array([1.0, 2.0, 2.0, 1.5, 3.0]))
    assert y[:-1].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert math.isnan(y[-1])


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError):
        F.feature_matrix(np.ones(40), np.ones(40), np.ones(41), np.ones(40))
