"""Model loading: sklearn flavour, skops with our allow-list, fail-closed errors."""

from __future__ import annotations

import socket
import time

import mlflow.sklearn
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from quantramp.trader.features import FEATURE_NAMES, N_FEATURES
from quantramp.trader.model import (
    TRUSTED_TYPES,
    DirectionModel,
    ModelLoadError,
    check_tracking_server,
    load_local_model,
    load_model,
)


def _xy(n=200, k=N_FEATURES, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, k))
    y = (X[:, 0] + 0.1 * rng.normal(size=n) > 0).astype(int)
    return X, y


def test_p_up_is_the_probability_of_class_one():
    X, y = _xy()
    est = LogisticRegression().fit(X, y)
    m = DirectionModel(est)
    p = m.p_up(X[:5])
    assert p.shape == (5,)
    np.testing.assert_allclose(p, est.predict_proba(X[:5])[:, 1])
    assert m.p_up_one(X[0]) == pytest.approx(p[0])
    assert m.p_up_one(np.full(N_FEATURES, 0.0) + np.eye(N_FEATURES)[0] * 5) > 0.9


def test_wrong_feature_count_is_refused():
    X, y = _xy(k=4)
    with pytest.raises(ModelLoadError, match="expects 4 features"):
        DirectionModel(LogisticRegression().fit(X, y))


@pytest.mark.parametrize("est", [LogisticRegression(), RandomForestClassifier(n_estimators=3, random_state=0)])
def test_skops_model_loads_with_our_allow_list(tmp_path, est):
    X, y = _xy()
    est.fit(X, y)
    path = tmp_path / "m"
    mlflow.sklearn.save_model(
        est, str(path), serialization_format="skops", skops_trusted_types=list(TRUSTED_TYPES),
        metadata={"features": list(FEATURE_NAMES)}, pip_requirements=[],
    )
    m = load_local_model(path, "models:/x/1")
    np.testing.assert_allclose(m.p_up(X[:10]), est.predict_proba(X[:10])[:, 1])
    assert m.info["metadata"]["serialization_format"] == "skops"


def test_model_trained_on_other_features_is_refused(tmp_path):
    X, y = _xy()
    path = tmp_path / "m"
    mlflow.sklearn.save_model(
        LogisticRegression().fit(X, y), str(path), serialization_format="skops",
        metadata={"features": ["a", "b", "c", "d", "e", "f"]}, pip_requirements=[],
    )
    with pytest.raises(ModelLoadError, match="trained on features"):
        load_local_model(path)


def test_pickle_model_is_refused(tmp_path):
    X, y = _xy()
    path = tmp_path / "m"
    mlflow.sklearn.save_model(LogisticRegression().fit(X, y), str(path), serialization_format="pickle", pip_requirements=[])
    with pytest.raises(ModelLoadError, match="refusing a 'pickle'"):
        load_local_model(path)


def test_skops_model_with_types_outside_our_allow_list_is_refused(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = _xy()
    est = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
    path = tmp_path / "m"
    # whoever logged it declared the type trusted; the trader does not take their word for it
    mlflow.sklearn.save_model(
        est, str(path), serialization_format="skops", pip_requirements=[],
        skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
    )
    with pytest.raises(ModelLoadError, match="untrusted types"):
        load_local_model(path)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="not an MLflow model"):
        load_local_model(tmp_path)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_mlflow_fails_fast():
    uri = f"http://127.0.0.1:{_dead_port()}"
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError, match="unreachable"):
        check_tracking_server(uri)
    with pytest.raises(ModelLoadError, match="unreachable"):
        load_model("models:/aapl/1", uri)
    assert time.monotonic() - t0 < 10


def test_missing_uri_or_tracking_server(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ModelLoadError, match="QR_MODEL_URI"):
        load_model("", "http://127.0.0.1:1")
    with pytest.raises(ModelLoadError, match="MLFLOW_TRACKING_URI"):
        load_model("models:/aapl/1")
