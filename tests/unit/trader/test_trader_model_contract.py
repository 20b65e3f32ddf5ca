"""The model contract (issue 13 item 3): a feature spec registered with the model and used by the
trader, the signature check, pyfunc/pickle models only with QR_ALLOW_PICKLE_MODELS, and
``quantramp-trader train`` on another symbol's bars."""

from __future__ import annotations

import math
import os

import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from quantramp.trader import features as F
from quantramp.trader import model as M
from quantramp.trader.backtest import make_engine
from quantramp.trader.cli import app
from quantramp.trader.engine import EngineConfig
from quantramp.trader.marketdata import load_hourly_bars, load_minute_bars
from quantramp.trader.model import ModelLoadError, load_local_model, load_model, load_model_in_process

EXPERIMENT = "quantramp-contract-test"
SPEC = F.FeatureSpec(features=("ret_1", "ret_3", "range", "volume_z"), vol_window=20, volume_window=12)


# -- the spec -----------------------------------------------------------------------------------


def test_spec_round_trips_through_json_and_metadata():
    assert F.FeatureSpec.from_json(SPEC.to_json()) == SPEC
    assert F.FeatureSpec.model_validate(SPEC.to_dict()) == SPEC
    assert SPEC.to_dict() == {"format": "quantramp.features/v1", "features": ["ret_1", "ret_3", "range", "volume_z"],
                              "vol_window": 20, "volume_window": 12}
    assert F.FeatureSpec().to_dict()["features"] == list(F.FEATURE_NAMES)
    assert F.FeatureSpec().lookback == F.LOOKBACK and F.FeatureSpec().is_default
    assert SPEC.lookback == 21 and SPEC.horizons == (1, 3) and not SPEC.is_default
    assert F.FeatureSpec(features=("ret_60",), vol_window=5).lookback == 61


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"features": ("ret_1", "rsi_14")}, "'rsi_14' is not a built-in feature"),
        ({"features": ("ret_0",)}, "not a built-in feature"),
        ({"features": ("range", "range")}, "repeated"),
        ({"features": ()}, "at least 1"),
        ({"vol_window": 1}, "greater than or equal to 2"),
        ({"volume_window": 5000}, "less than or equal to 2000"),
        ({"features": ("ret_2001",)}, "above 2000"),
        ({"format": "other/v9"}, "quantramp.features/v1"),
        ({"colour": "red"}, "Extra inputs"),
    ],
)
def test_bad_specs_are_refused(kw, match):
    with pytest.raises(ValidationError, match=match):
        F.FeatureSpec(**kw)


def _reference_features(bars) -> np.ndarray:
    """Today's six features written independently with pandas rolling windows (not feature_matrix)."""
    logc = pd.Series(np.log(bars.close))
    sigma = logc.diff().rolling(30).std(ddof=1).clip(lower=F.MIN_SIGMA)
    cols = [(logc - logc.shift(k)) / (sigma * math.sqrt(k)) for k in (1, 5, 15)]
    cols.append(pd.Series(np.log(bars.high / bars.low)) / sigma)
    span = bars.high - bars.low
    cols.append(pd.Series(np.where(span > 0, (2 * bars.close - bars.high - bars.low) / np.where(span > 0, span, 1), 0.0)))
    lv = pd.Series(np.log1p(bars.volume))
    mu, sd = lv.rolling(30).mean(), lv.rolling(30).std(ddof=1)
    cols.append(((lv - mu) / sd).where(sd > 0, 0.0))
    X = np.column_stack([c.to_numpy(dtype=float) for c in cols])
    X[: F.LOOKBACK - 1] = np.nan
    return np.clip(X, -F.FEATURE_CLIP, F.FEATURE_CLIP)


@pytest.mark.parametrize("load", [load_minute_bars, load_hourly_bars], ids=["minute", "hourly"])
def test_the_default_spec_is_todays_six_features(load):
    bars = load()
    got = F.FeatureSpec().matrix(bars.high, bars.low, bars.close, bars.volume)
    assert np.array_equal(got, F.bars_features(bars), equal_nan=True)  # the default argument is the default spec
    ref = _reference_features(bars)
    ok = slice(F.LOOKBACK - 1, None)
    assert np.isnan(got[: F.LOOKBACK - 1]).all()
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-9)


def test_a_spec_selects_and_orders_columns_and_the_stream_matches_the_batch():
    bars = load_minute_bars()
    every = F.FeatureSpec(features=("volume_z", "ret_15", "close_loc", "ret_5", "range", "ret_1"))
    X = every.matrix(bars.high, bars.low, bars.close, bars.volume)
    D = F.bars_features(bars)
    np.testing.assert_array_equal(X, D[:, [5, 2, 4, 1, 3, 0]])
    X = F.bars_features(bars, SPEC)
    assert X.shape == (len(bars), 4) and np.isnan(X[: SPEC.lookback - 1]).all()
    assert np.isfinite(X[SPEC.lookback - 1 :]).all()
    fs = SPEC.stream()
    rows = [fs.update(h, lo, c, v) for h, lo, c, v in zip(bars.high, bars.low, bars.close, bars.volume)]
    assert all(r is None for r in rows[: SPEC.lookback - 1])
    S = np.vstack(rows[SPEC.lookback - 1 :])
    np.testing.assert_allclose(S, X[SPEC.lookback - 1 :], rtol=0, atol=1e-12)
    # a saved window comes back with the same spec
    again = fs.refilled(**fs.window())
    assert again.spec == SPEC and again.window() == fs.window()


# -- the signature check, on model directories ----------------------------------------------


def _fitted(spec: F.FeatureSpec):
    bars = load_hourly_bars()
    X = F.bars_features(bars, spec)
    y = F.next_bar_up(bars.close)
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    est = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X[ok], y[ok].astype(int))
    return est, X[ok][:5]


def _save(path, est, example, names, metadata):
    p = est.predict_proba(example)[:, 1]
    sig = infer_signature(pd.DataFrame(example, columns=names) if names else example, p)
    mlflow.sklearn.save_model(est, str(path), serialization_format="skops", signature=sig, metadata=metadata,
                              pip_requirements=[])
    return path


def test_a_spec_model_loads_with_its_spec(tmp_path):
    est, ex = _fitted(SPEC)
    m = load_local_model(_save(tmp_path / "m", est, ex, list(SPEC.features), {F.SPEC_METADATA_KEY: SPEC.to_dict()}))
    assert m.feature_spec == SPEC and m.fast_path


@pytest.mark.parametrize(
    "names, metadata, match",
    [
        (["ret_3", "ret_1", "range", "volume_z"], {F.SPEC_METADATA_KEY: SPEC.to_dict()},
         r"signature takes inputs \['ret_3', 'ret_1', 'range', 'volume_z'\], its feature spec computes "
         r"\['ret_1', 'ret_3', 'range', 'volume_z'\]: they must be the same names in the same order"),
        (None, {F.SPEC_METADATA_KEY: SPEC.to_dict()}, "signature takes an unnamed tensor"),
        (["ret_1", "ret_3", "range", "volume_z"], {F.SPEC_METADATA_KEY: {**SPEC.to_dict(), "features": ["ret_1", "ret_3", "range", "rsi_14"]}},
         r"cannot compute the model's features: .*'rsi_14' is not a built-in feature"),
        (["ret_1", "ret_3", "range", "volume_z"], {F.SPEC_METADATA_KEY: {**SPEC.to_dict(), "vol_window": 1}},
         r"feature spec .* is invalid: vol_window: Input should be greater than or equal to 2"),
        (["ret_1", "ret_3", "range", "rsi_14"], {}, r"signature's inputs .*'rsi_14'.* are not built-in features"),
    ],
    ids=["order", "unnamed", "unknown-feature", "bad-window", "unknown-signature-name"],
)
def test_a_model_the_trader_cannot_feed_is_refused(tmp_path, names, metadata, match):
    est, ex = _fitted(SPEC)
    path = _save(tmp_path / "m", est, ex, names, metadata)
    with pytest.raises(ModelLoadError, match=match):
        load_local_model(path, "models:/bad/1")


def test_a_legacy_model_with_the_wrong_column_count_is_refused(tmp_path):
    spec5 = F.FeatureSpec(features=F.FEATURE_NAMES[:5])
    est, ex = _fitted(spec5)
    path = _save(tmp_path / "m", est, ex, None, {})  # no spec, unnamed tensor of 5 columns
    with pytest.raises(ModelLoadError, match=r"tensors \[\(-1, 5\)\].* rows of 6 features.*wrong column count"):
        load_local_model(path, "models:/bad/1")


def test_the_allow_pickle_setting_is_parsed_strictly(monkeypatch):
    assert M.allow_pickle_models({}) is False
    assert M.allow_pickle_models({"QR_ALLOW_PICKLE_MODELS": "true"}) is True
    assert M.allow_pickle_models({"QR_ALLOW_PICKLE_MODELS": "False"}) is False
    with pytest.raises(ModelLoadError, match="QR_ALLOW_PICKLE_MODELS='maybe' must be true or false"):
        M.allow_pickle_models({"QR_ALLOW_PICKLE_MODELS": "maybe"})


# -- registry: train on another symbol, a pyfunc model --------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-contract")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    finally:
        os.chdir(cwd)
    return {"tracking_uri": uri, "root": root}


def _msft_csv(path) -> str:
    """The bundled AAPL minute bars with prices scaled by 1.7 (rounded to cents), named MSFT."""
    b = load_minute_bars()
    frame = pd.DataFrame({
        "timestamp": pd.DatetimeIndex(b.ts).tz_localize("UTC").strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        **{k: np.round(getattr(b, k) * 1.7, 2) for k in ("open", "high", "low", "close")},
        "volume": b.volume,
    })
    frame.to_csv(path, index=False)
    return str(path)


def test_train_on_another_symbols_csv_registers_model_and_spec_and_the_trader_serves_it(store, tmp_path, monkeypatch):
    csv = _msft_csv(tmp_path / "msft.csv")
    runner = CliRunner()
    common = ["train", "--model-name", "msft-spec", "--tracking-uri", store["tracking_uri"],
              "--bars-source", "file", "--bars-url", csv, "--symbol", "MSFT"]
    # the bar length check: these are minute bars
    bad = runner.invoke(app, [*common, "--bar-seconds", "3600"])
    assert bad.exit_code == 1 and "60 s apart" in bad.output, bad.output
    monkeypatch.chdir(store["root"])
    res = runner.invoke(app, [*common, "--bar-seconds", "60", "--features", ",".join(SPEC.features),
                              "--vol-window", "20", "--volume-window", "12"])
    assert res.exit_code == 0, res.output
    version = res.stdout.strip().splitlines()[-1]
    uri = f"models:/msft-spec/{version}"

    mv = mlflow.MlflowClient(store["tracking_uri"]).get_model_version("msft-spec", version)
    assert mv.tags["quantramp.symbol"] == "MSFT" and mv.tags["quantramp.features"] == "ret_1,ret_3,range,volume_z"
    ref = load_model_in_process(uri, store["tracking_uri"])
    assert ref.feature_spec == SPEC

    m = load_model(uri, store["tracking_uri"])  # the trader's loader (child process)
    assert isinstance(m, M.LogisticModel) and m.feature_spec == SPEC
    eng = make_engine(m, EngineConfig.for_capital(100_000.0, symbol="MSFT"), load_minute_bars())
    assert eng.features.spec == SPEC
    b = load_minute_bars()
    X = F.bars_features(b, SPEC)[SPEC.lookback - 1 :]
    fs = eng.features
    served = [m.p_up_one(x) for x in (fs.update(*r) for r in zip(b.high, b.low, b.close, b.volume)) if x is not None]
    want = ref.estimator.predict_proba(X)[:, ref._up]
    assert len(served) == len(want)
    np.testing.assert_allclose(served, want, rtol=0, atol=M.EQUIVALENCE_TOL)


def _log_pyfunc(store, name: str) -> str:
    """A cloudpickled pyfunc (class defined here: pickled by value) returning P(up) = expit(ret_1 - 0.5 * range)."""

    class UpModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            print("user code prints this")  # must not break the protocol
            z = model_input["ret_1"].to_numpy() - 0.5 * model_input["range"].to_numpy()
            return 1.0 / (1.0 + np.exp(-z))

    cols = ["ret_1", "range", "close_loc"]
    example = pd.DataFrame([[0.1, 1.0, -0.2]], columns=cols)
    return _register_pyfunc(store, name, UpModel(), infer_signature(example, np.array([0.4])))


def _register_pyfunc(store, name: str, python_model, signature) -> str:
    """Log ``python_model`` (cloudpickled) as version 1+ of registered model ``name`` in ``store``; its URI."""
    cwd = os.getcwd()
    os.chdir(store["root"])
    try:
        mlflow.set_tracking_uri(store["tracking_uri"])
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="model", python_model=python_model, signature=signature,
                                           registered_model_name=name, pip_requirements=[])
    finally:
        os.chdir(cwd)
    return f"models:/{name}/{info.registered_model_version}"


def test_a_cloudpickle_pyfunc_is_refused_by_default_and_served_when_allowed(store, monkeypatch):
    uri = _log_pyfunc(store, "pyfunc-up")
    monkeypatch.delenv("QR_ALLOW_PICKLE_MODELS", raising=False)
    with pytest.raises(ModelLoadError, match=r"refusing a pyfunc model with a cloudpickled python_model.*"
                                             r"QR_ALLOW_PICKLE_MODELS=true"):
        load_model(uri, store["tracking_uri"])

    monkeypatch.setenv("QR_ALLOW_PICKLE_MODELS", "true")
    # the trader clears its dumpable flag before the server (the model's code) starts: recorded here, not
    # applied to the test process (test_model_server_isolation.py shows what the flag does)
    started_after: list[bool] = []
    monkeypatch.setattr(M, "make_undumpable", lambda: started_after.append(True) or True)
    m = load_model(uri, store["tracking_uri"])
    try:
        assert started_after == [True]
        assert isinstance(m, M.PyfuncModel)
        assert m.feature_spec == F.FeatureSpec(features=("ret_1", "range", "close_loc"))  # from the signature
        assert m._proc.pid != os.getpid() and "model server process" in m.info["serving"]
        X = np.array([[0.3, 1.2, 0.0], [-2.0, 0.5, 1.0], [8.0, 0.0, -1.0]])
        want = 1.0 / (1.0 + np.exp(-(X[:, 0] - 0.5 * X[:, 1])))
        np.testing.assert_allclose(m.p_up(X), want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(m.p_up_rows(X), want, rtol=0, atol=1e-12)
        assert m.p_up_one(X[1]) == pytest.approx(want[1], abs=1e-12)
        with pytest.raises(ValueError, match="rows of 3 features"):
            m.p_up_one(np.zeros(6))
    finally:
        m.close()
    with pytest.raises(M.ModelServingError, match="closed"):
        m.p_up_one(X[0])


def test_a_pyfunc_that_does_not_answer_a_probability_is_refused_at_load(store, monkeypatch):
    class Labels(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.full(len(model_input), 3.0)

    example = pd.DataFrame([[0.1]], columns=["ret_1"])
    uri = _register_pyfunc(store, "pyfunc-labels", Labels(), infer_signature(example, np.array([1.0])))
    monkeypatch.setenv("QR_ALLOW_PICKLE_MODELS", "true")
    with pytest.raises(ModelLoadError, match=r"cannot be served: .*outside \[0, 1\]"):
        load_model(uri, store["tracking_uri"])
