"""Serving fast paths (issue #3, "Speed"): same numbers as the general path, on real features.

- :class:`~quantramp.trader.model._LogisticRow` (one-row P(up) of the registered
  logistic pipeline without scikit-learn's per-call validation) against
  ``predict_proba``, one row at a time and in batch;
- :class:`~quantramp.trader.features.FeatureStream` (scalar evaluation of the
  newest row) against ``feature_matrix`` on the same window, bit for bit.
"""

from __future__ import annotations

import mlflow.sklearn
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from quantramp.trader import features as F
from quantramp.trader.model import TRUSTED_TYPES, DirectionModel, load_local_model
from quantramp.trader.train import fit, training_data
from quantramp.trader.marketdata import load_hourly_bars, load_minute_bars

TOL = 1e-12


@pytest.fixture(scope="module")
def real_rows() -> np.ndarray:
    """Feature rows of the real minute replay (as served) and of the real hourly bars (as trained)."""
    minute = F.bars_features(load_minute_bars())[F.LOOKBACK - 1 :]
    hourly = F.bars_features(load_hourly_bars())[F.LOOKBACK - 1 :]
    X = np.vstack([minute, hourly])
    assert np.isfinite(X).all() and len(X) > 5_000
    return X


@pytest.fixture(scope="module")
def logistic():
    return fit("logistic").estimator


def _one_row_proba(est, X, up):
    return np.array([est.predict_proba(r.reshape(1, -1))[0, up] for r in X])


def test_trained_logistic_model_takes_the_fast_path(logistic, real_rows):
    m = DirectionModel(logistic)
    assert m.fast_path
    fast = np.array([m.p_up_one(r) for r in real_rows])
    batch = logistic.predict_proba(real_rows)[:, 1]
    one = _one_row_proba(logistic, real_rows, 1)
    assert np.abs(fast - batch).max() <= TOL
    assert np.abs(fast - one).max() <= TOL
    # the decisions the engine takes from them are the same
    for t in (0.0, 0.01, 0.03):
        np.testing.assert_array_equal(fast > 0.5 + t, one > 0.5 + t)
        np.testing.assert_array_equal(fast < 0.5 - t, one < 0.5 - t)


def test_fast_path_after_the_mlflow_skops_round_trip(logistic, real_rows, tmp_path):
    path = tmp_path / "m"
    mlflow.sklearn.save_model(
        logistic, str(path), serialization_format="skops", skops_trusted_types=list(TRUSTED_TYPES),
        metadata={"features": list(F.FEATURE_NAMES)}, pip_requirements=[],
    )
    m = load_local_model(path, "models:/x/1")
    assert m.fast_path
    fast = np.array([m.p_up_one(r) for r in real_rows[:500]])
    assert np.abs(fast - logistic.predict_proba(real_rows[:500])[:, 1]).max() <= TOL


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(C=0.3),
        lambda: Pipeline([("s", StandardScaler(with_mean=False)), ("c", LogisticRegression())]),
        lambda: Pipeline([("s", StandardScaler(with_std=False)), ("c", LogisticRegression())]),
    ],
    ids=["bare", "no-mean", "no-std"],
)
def test_other_logistic_shapes_match(make, real_rows):
    d = training_data()
    est = make().fit(d.X_fit, d.y_fit)
    m = DirectionModel(est)
    assert m.fast_path
    X = real_rows[::7]
    fast = np.array([m.p_up_one(r) for r in X])
    assert np.abs(fast - est.predict_proba(X)[:, 1]).max() <= TOL


def test_class_one_in_the_first_column(real_rows):
    # classes_ == [1, 2]: "up" (class 1) is column 0, P(up) = 1 - expit(decision)
    d = training_data()
    est = Pipeline([("s", StandardScaler()), ("c", LogisticRegression())]).fit(d.X_fit, d.y_fit + 1)
    m = DirectionModel(est)
    assert m.fast_path and list(est.classes_) == [1, 2]
    X = real_rows[::5]
    fast = np.array([m.p_up_one(r) for r in X])
    assert np.abs(fast - est.predict_proba(X)[:, 0]).max() <= TOL


def test_other_models_keep_the_general_path(real_rows):
    d = training_data()
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(d.X_fit, d.y_fit)
    m = DirectionModel(forest)
    assert not m.fast_path
    assert m.p_up_one(real_rows[0]) == forest.predict_proba(real_rows[:1])[0, 1]

    class MyLogistic(LogisticRegression):  # a subclass may override predict_proba: not ours to shortcut
        pass

    assert not DirectionModel(MyLogistic().fit(d.X_fit, d.y_fit)).fast_path
    three = Pipeline([("a", StandardScaler()), ("b", StandardScaler()), ("c", LogisticRegression())])
    assert not DirectionModel(three.fit(d.X_fit, d.y_fit)).fast_path


def test_bad_rows_fail_like_predict_proba(logistic):
    m = DirectionModel(logistic)
    row = np.zeros(F.N_FEATURES)
    row[2] = np.nan
    with pytest.raises(ValueError):
        m.p_up_one(row)
    row[2] = np.inf
    with pytest.raises(ValueError):
        m.p_up_one(row)
    with pytest.raises(ValueError):
        m.p_up_one(np.zeros(F.N_FEATURES - 1))
    # any shape holding N_FEATURES values is one row, as before
    x = np.linspace(-1, 1, F.N_FEATURES)
    assert m.p_up_one(x.reshape(-1, 1)) == m.p_up_one(x) == m.p_up_one(x.tolist())


@pytest.mark.parametrize("n", [1, 5, 7, 8, 9, 15, 16, 29, 30, 31, 64, 127, 128, 129, 300, 1000])
def test_pairwise_sum_is_numpys_sum(n):
    a = np.random.default_rng(n).normal(size=n) * 10.0 ** np.random.default_rng(n + 1).integers(-8, 8, n)
    assert F._pairwise_sum(a.tolist()) == float(np.add.reduce(a))


@pytest.mark.parametrize("loader", [load_minute_bars, load_hourly_bars])
def test_stream_row_is_feature_matrix_on_its_window_bit_for_bit(loader):
    b = loader()
    h, lo, c, v = b.high, b.low, b.close, b.volume
    s = F.FeatureStream()
    checked = 0
    for i in range(len(c)):
        row = s.update(h[i], lo[i], c[i], v[i])
        if i < F.LOOKBACK - 1:
            assert row is None
            continue
        w = slice(i - F.LOOKBACK + 1, i + 1)
        np.testing.assert_array_equal(row, F.feature_matrix(h[w], lo[w], c[w], v[w])[-1])
        checked += 1
    assert checked == len(c) - F.LOOKBACK + 1


def test_stream_edge_cases_match_feature_matrix():
    n = F.LOOKBACK + 5
    flat = np.full(n, 50.0)
    for vol in (np.zeros(n), np.full(n, 777.0)):
        s = F.FeatureStream()
        rows = [s.update(flat[i], flat[i], flat[i], vol[i]) for i in range(n)]
        np.testing.assert_array_equal(np.vstack(rows[F.LOOKBACK - 1 :]), F.feature_matrix(flat, flat, flat, vol)[F.LOOKBACK - 1 :])


@pytest.mark.parametrize("up_first", [False, True])
def test_p_up_rows_equals_p_up_one_bit_for_bit(logistic, real_rows, up_first):
    """The batch replay's P(up) (p_up_rows) is p_up_one row by row, exactly, for the
    in-process model and for the numpy-only model the pod serves."""
    from quantramp.trader.model import LogisticModel, _LogisticRow

    est = logistic
    if up_first:
        d = training_data()
        est = Pipeline([("s", StandardScaler()), ("c", LogisticRegression())]).fit(d.X_fit, d.y_fit + 1)
    up = 0 if up_first else 1
    in_process = DirectionModel(est)
    served = LogisticModel(_LogisticRow.of(est, up))
    for m in (in_process, served):
        rows = m.p_up_rows(real_rows)
        one = np.array([m.p_up_one(r) for r in real_rows])
        assert rows.shape == (len(real_rows),)
        np.testing.assert_array_equal(rows, one)


def test_p_up_rows_without_the_fast_path_is_p_up_one(real_rows):
    d = training_data()
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(d.X_fit, d.y_fit)
    m = DirectionModel(forest)
    X = real_rows[:50]
    np.testing.assert_array_equal(m.p_up_rows(X), [m.p_up_one(r) for r in X])
