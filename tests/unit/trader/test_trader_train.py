"""Training data and the two model kinds (no MLflow server needed)."""

from __future__ import annotations

import numpy as np
import pytest

from quantramp.trader import train as T
from quantramp.trader.features import N_FEATURES
from quantramp.trader.marketdata import load_hourly_bars, load_minute_bars


@pytest.fixture(scope="module")
def data():
    return T.training_data()


def test_training_data_is_hourly_before_the_replay(data):
    n_fit, n_test = len(data.y_fit), len(data.y_test)
    assert data.X_fit.shape == (n_fit, N_FEATURES) and data.X_test.shape == (n_test, N_FEATURES)
    assert np.isfinite(data.X_fit).all() and np.isfinite(data.X_test).all()
    assert set(np.unique(data.y_fit)) == {0, 1}
    assert n_test == pytest.approx(0.2 * (n_fit + n_test), abs=1)
    hourly = load_hourly_bars()
    before = (hourly.ts < load_minute_bars().ts[0]).sum()
    # warm-up rows and the last labelled row drop out; nothing from the replayed week is used
    assert n_fit + n_test <= before - 30
    assert n_fit + n_test >= before - 40


def test_shuffled_labels_keep_the_class_balance(data):
    shuffled = T.training_data(shuffle_labels=True, seed=3)
    assert shuffled.y_fit.sum() == data.y_fit.sum()
    assert (shuffled.y_fit != data.y_fit).any()
    np.testing.assert_array_equal(shuffled.y_test, data.y_test)
    np.testing.assert_array_equal(T.training_data(shuffle_labels=True, seed=3).y_fit, shuffled.y_fit)


def test_directional_precision():
    p = np.array([0.9, 0.9, 0.1, 0.5, 0.52])
    y = np.array([1, 0, 0, 1, 0])
    assert T.directional_precision(p, y, threshold=0.03) == pytest.approx(2 / 3)
    assert np.isnan(T.directional_precision(np.full(3, 0.5), np.ones(3)))


def test_forest_on_shuffled_labels_memorises_noise():
    res = T.fit("forest", shuffle_labels=True, seed=0)
    assert res.train_precision > 0.9  # it learnt the noise ...
    assert res.holdout_precision < 0.6  # ... which does not generalise


def test_logistic_probabilities_stay_near_a_half():
    res = T.fit("logistic")
    d = T.training_data()
    p = res.estimator.predict_proba(d.X_test)[:, 1]
    assert 0.3 < p.min() and p.max() < 0.7


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown model kind"):
        T.build_estimator("xgboost")
