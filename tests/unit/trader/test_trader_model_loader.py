"""The trader's model loader (issue #3, RSS <= 250 MB): MLflow, skops and scikit-learn run in a
child process; the registered logistic model is served by numpy only, equal to ``predict_proba``
within ``EQUIVALENCE_TOL`` (issue #7: not bit for bit, which BLAS does not give across CPUs)
with the same decisions; any failure of the child is a ModelLoadError."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pytest
from scipy.special import expit
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from quantramp.trader import features as F
from quantramp.trader import model as M
from quantramp.trader import modelfetch
from quantramp.trader.marketdata import load_hourly_bars, load_minute_bars
from quantramp.trader.engine import DEFAULT_ENTRY_THRESHOLD, signal_of
from quantramp.trader.model import (
    EQUIVALENCE_TOL,
    TRUSTED_TYPES,
    DirectionModel,
    LogisticModel,
    ModelLoadError,
    load_model,
    load_model_in_process,
)
from quantramp.trader.train import train_and_register, training_data

EXPERIMENT = "quantramp-loader-test"
HEAVY = ("mlflow", "skops", "sklearn", "scipy", "sqlalchemy")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A sqlite MLflow store with the logistic model as ``quantramp-trader train`` registers it, and a small forest."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(root)  # MLflow defaults stay in the temp dir
    try:
        mlflow.set_tracking_uri(uri)  # the registry follows it (set_registry_uri would stick for later tests)
        mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
        logistic = train_and_register("t-logistic", kind="logistic", tracking_uri=uri, experiment=EXPERIMENT)
        d = training_data()
        forest = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(d.X_fit, d.y_fit)
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                forest, name="model", registered_model_name="t-forest", serialization_format="skops",
                skops_trusted_types=list(TRUSTED_TYPES), metadata={"features": list(F.FEATURE_NAMES)},
                pip_requirements=[],
            )
    finally:
        os.chdir(cwd)
    return {"tracking_uri": uri, "logistic": f"models:/t-logistic/{logistic}", "forest": "models:/t-forest/1"}


@pytest.fixture(scope="module")
def real_rows() -> np.ndarray:
    """Feature rows of the real minute replay (as served) and of the real hourly bars (as trained)."""
    minute = F.bars_features(load_minute_bars())[F.LOOKBACK - 1 :]
    hourly = F.bars_features(load_hourly_bars())[F.LOOKBACK - 1 :]
    return np.vstack([minute, hourly])


def assert_equivalent(got: np.ndarray, ref: np.ndarray) -> None:
    """The serving contract (issue #7): max |Δp| <= EQUIVALENCE_TOL and the same call at the
    entry thresholds, on every row."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    assert float(np.max(np.abs(got - ref))) <= EQUIVALENCE_TOL
    for t in (0.0, DEFAULT_ENTRY_THRESHOLD, 0.1):
        np.testing.assert_array_equal(signal_of(got, t), signal_of(ref, t))


def test_logistic_model_is_served_by_numpy_within_tolerance(store, real_rows):
    m = load_model(store["logistic"], store["tracking_uri"])
    assert isinstance(m, LogisticModel) and m.fast_path and m.uri == store["logistic"]
    assert m.info["version"] == "1" and m.info["tags"]["quantramp.kind"] == "logistic"
    assert m.info["metadata"]["serialization_format"] == "skops"
    assert m.info["serving"].startswith("numpy")
    eq = m.info["equivalence"]
    assert eq["tolerance"] == EQUIVALENCE_TOL and 0.0 <= eq["max_abs_diff"] <= EQUIVALENCE_TOL
    est = load_model_in_process(store["logistic"], store["tracking_uri"]).estimator
    # batch: predict_proba on the same rows
    assert_equivalent(m.p_up(real_rows), est.predict_proba(real_rows)[:, 1])
    assert_equivalent(m.p_up(real_rows[::7]), est.predict_proba(real_rows[::7])[:, 1])
    # one row at a time, as the engine calls it: predict_proba of that one row
    one = np.array([est.predict_proba(x.reshape(1, -1))[0, 1] for x in real_rows])
    served = np.array([m.p_up_one(x) for x in real_rows])
    assert_equivalent(served, one)


def test_the_trader_process_never_imports_mlflow_or_sklearn(store):
    code = (
        "import json, sys\n"
        "from quantramp.trader import server\n"
        f"m = server.load_model({store['logistic']!r}, {store['tracking_uri']!r})\n"
        "print(json.dumps({'model': type(m).__name__, 'p': m.p_up_one([0.0] * 6),\n"
        f"                  'heavy': sorted(k for k in {HEAVY!r} if k in sys.modules)}}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["model"] == "LogisticModel" and out["heavy"] == []
    assert 0.0 < out["p"] < 1.0


def test_other_estimators_are_loaded_in_process_without_mlflow(store, real_rows):
    m = load_model(store["forest"], store["tracking_uri"])
    assert isinstance(m, DirectionModel) and not m.fast_path
    assert m.info["serving"] == "scikit-learn" and "LogisticRegression" in m.info["fast_path_rejected"]
    assert m.info["version"] == "1" and m.info["metadata"]["features"] == list(F.FEATURE_NAMES)
    ref = load_model_in_process(store["forest"], store["tracking_uri"])
    np.testing.assert_array_equal(m.p_up(real_rows[:500]), ref.p_up(real_rows[:500]))


def test_unknown_model_or_store_is_a_load_error(store, tmp_path):
    with pytest.raises(ModelLoadError, match="cannot download models:/t-logistic/9"):
        load_model("models:/t-logistic/9", store["tracking_uri"])
    with pytest.raises(ModelLoadError, match="cannot download"):
        load_model("models:/nope/1", f"sqlite:///{tmp_path / 'empty.db'}")


def _fake_loader(monkeypatch, script: str) -> None:
    """Replace the loader process by ``python -c script URI TRACKING_URI OUT_DIR``."""
    monkeypatch.setattr(M, "loader_command", lambda uri, tracking, out: [sys.executable, "-c", script, uri, tracking, str(out)])


def _writes(result: dict) -> str:
    return (
        "import json, sys, pathlib\n"
        f"r = json.loads({json.dumps(json.dumps(result))})\n"
        "r['uri'] = r.get('uri', sys.argv[1])\n"
        f"pathlib.Path(sys.argv[3], {M.RESULT_FILE!r}).write_text(json.dumps(r))\n"
    )


GOOD = {"mean": None, "scale": None, "coef": [0.5] * F.N_FEATURES, "intercept": 0.1, "up_is_first": False}


@pytest.mark.parametrize(
    "script, match",
    [
        ("import sys; sys.stderr.write('boom'); sys.exit(7)", "exited with code 7: boom"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "killed by signal 9"),
        ("pass", "exited without a result"),
        (f"import sys, pathlib; pathlib.Path(sys.argv[3], {M.RESULT_FILE!r}).write_text('{{not json')", "unreadable"),
        (_writes({"ok": False, "error": "models:/x/1: refusing skops model with untrusted types ['os.system']"}),
         r"untrusted types \['os.system'\]"),
        (_writes({"ok": True, "serving": "logistic", "info": {}, "params": {**GOOD, "coef": [0.5] * 5}}),
         "bad parameters: coef"),
        (_writes({"ok": True, "serving": "logistic", "info": {}, "params": {**GOOD, "intercept": "NaN"}}),
         "bad parameters: intercept"),
        (_writes({"ok": True, "serving": "sklearn", "info": {}, "skops_path": "/etc/passwd"}), "malformed"),
        (_writes({"ok": True, "serving": "magic", "info": {}}), "malformed"),
        (_writes({"ok": True, "serving": "logistic", "uri": "models:/other/1", "info": {}, "params": GOOD}),
         "malformed"),
    ],
    ids=["crash", "killed", "no-result", "garbage", "error", "short-coef", "bad-intercept", "escape", "kind", "uri"],
)
def test_any_loader_failure_is_a_load_error(monkeypatch, script, match):
    _fake_loader(monkeypatch, script)
    with pytest.raises(ModelLoadError, match=match):
        load_model("models:/x/1", "http://127.0.0.1:1")


def test_a_hung_loader_is_killed(monkeypatch):
    _fake_loader(monkeypatch, "import time; time.sleep(60)")
    with pytest.raises(ModelLoadError, match="took more than 1 s"):
        load_model("models:/x/1", "http://127.0.0.1:1", timeout_s=1.0)


def test_a_well_formed_answer_is_served(monkeypatch):
    _fake_loader(monkeypatch, _writes({"ok": True, "serving": "logistic", "info": {"version": "3"}, "params": GOOD}))
    m = load_model("models:/x/1", "http://127.0.0.1:1")
    assert isinstance(m, LogisticModel) and m.info == {"version": "3"}
    assert m.p_up_one(np.zeros(F.N_FEATURES)) == pytest.approx(expit(0.1), abs=EQUIVALENCE_TOL)


# -- the numpy arithmetic ---------------------------------------------------------------------------
def test_expit_is_scipys():
    rng = np.random.default_rng(0)
    d = np.concatenate([
        rng.normal(size=200_000), rng.normal(size=200_000) * 40, rng.uniform(-800, 800, 50_000),
        [0.0, -0.0, 5e-324, -5e-324, 36.7, -36.7, 709.78, -709.78, -709.79, -745.2, 745.2, 1e308, -1e308],
    ])
    ours = np.array([M._expit(v) for v in d.tolist()])
    # the same C library exp on both sides; 2 ulp leaves room for a libm variant chosen per CPU
    np.testing.assert_array_max_ulp(ours, expit(d), maxulp=2)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]),
        lambda: LogisticRegression(C=0.3),
        lambda: Pipeline([("s", StandardScaler(with_mean=False)), ("c", LogisticRegression())]),
        lambda: Pipeline([("s", StandardScaler(with_std=False)), ("c", LogisticRegression())]),
    ],
    ids=["pipeline", "bare", "no-mean", "no-std"],
)
@pytest.mark.parametrize("shift", [0, 1], ids=["classes01", "classes12"])
def test_exported_parameters_reproduce_predict_proba(make, shift, real_rows):
    d = training_data()
    est = make().fit(d.X_fit, d.y_fit + shift)
    ref = DirectionModel(est)
    row = M._LogisticRow.of(est, ref._up)
    assert row is not None and row.up_is_first == bool(shift)
    params = M._LogisticRow.from_dict(json.loads(json.dumps(row.to_dict())))
    assert params.to_dict() == row.to_dict()  # exact float round trip
    m = LogisticModel(params)
    X = real_rows[::3]
    assert_equivalent(m.p_up(X), est.predict_proba(X)[:, ref._up])
    one = [est.predict_proba(x.reshape(1, -1))[0, ref._up] for x in X[:300]]
    assert_equivalent([m.p_up_one(x) for x in X[:300]], one)
    reason, worst = modelfetch.check_equivalent(params, ref)
    assert reason is None and 0.0 <= worst <= EQUIVALENCE_TOL


@pytest.fixture(scope="module")
def fitted() -> tuple[DirectionModel, dict]:
    d = training_data()
    est = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(d.X_fit, d.y_fit)
    ref = DirectionModel(est)
    return ref, M._LogisticRow.of(est, ref._up).to_dict()


def test_rounding_noise_is_accepted(fitted):
    # one ulp in the intercept is what another summation order does to the decision value
    ref, p = fitted
    p = {**p, "intercept": math.nextafter(p["intercept"], math.inf)}
    reason, worst = modelfetch.check_equivalent(M._LogisticRow.from_dict(p), ref)
    assert reason is None and worst <= EQUIVALENCE_TOL


@pytest.mark.parametrize(
    "change",
    [
        lambda p: {**p, "coef": [p["coef"][0] * (1 + 1e-9)] + p["coef"][1:]},
        lambda p: {**p, "coef": p["coef"][:-1] + [p["coef"][-1] + 1e-6]},
        lambda p: {**p, "intercept": p["intercept"] + 1e-9},
        lambda p: {**p, "scale": [v * 1.001 for v in p["scale"]]},
        lambda p: {**p, "mean": None},
        lambda p: {**p, "up_is_first": not p["up_is_first"]},
    ],
    ids=["coef-1e-9-relative", "coef-plus-1e-6", "intercept-plus-1e-9", "scale", "no-mean", "class-order"],
)
def test_really_wrong_parameters_are_refused(fitted, change):
    ref, p = fitted
    reason, worst = modelfetch.check_equivalent(M._LogisticRow.from_dict(change(p)), ref)
    assert reason is not None and "differ from" in reason and worst > EQUIVALENCE_TOL


def test_a_decision_flip_is_refused_even_within_the_tolerance(fitted):
    # with the |Δp| bound switched off, the decision check alone still refuses a flipped model
    ref, p = fitted
    reason, _ = modelfetch.check_equivalent(M._LogisticRow.from_dict({**p, "up_is_first": True}), ref, tol=1.0)
    assert reason is not None and "flip the batch decision" in reason


def test_the_pods_entry_threshold_is_checked(monkeypatch):
    monkeypatch.setenv("QR_ENTRY_THRESHOLD", "0.2")
    assert modelfetch.decision_thresholds() == (0.0, DEFAULT_ENTRY_THRESHOLD, 0.2)
    for bad in ("x", "nan", "0.7", "-1"):
        monkeypatch.setenv("QR_ENTRY_THRESHOLD", bad)
        assert modelfetch.decision_thresholds() == (0.0, DEFAULT_ENTRY_THRESHOLD)


def test_bad_rows_fail_like_predict_proba():
    m = LogisticModel(M._LogisticRow.from_dict(GOOD))
    for bad in (np.nan, np.inf, -np.inf):
        row = np.zeros(F.N_FEATURES)
        row[2] = bad
        with pytest.raises(ValueError):
            m.p_up_one(row)
    with pytest.raises(ValueError):
        m.p_up_one(np.zeros(F.N_FEATURES - 1))
    with pytest.raises(ValueError):
        m.p_up(np.zeros(F.N_FEATURES))  # 1-D: not rows
    x = np.linspace(-1, 1, F.N_FEATURES)
    assert m.p_up_one(x.reshape(-1, 1)) == m.p_up_one(x) == m.p_up_one(x.tolist())
    assert m.p_up_one(x) == pytest.approx(m.p_up(x.reshape(1, -1))[0], abs=EQUIVALENCE_TOL)
    # a finite row whose decision value overflows: what predict_proba returns (expit(+-inf))
    with np.errstate(over="ignore"):  # numpy warns here, for scikit-learn too
        assert m.p_up_one(np.full(F.N_FEATURES, 1e308)) == 1.0
        assert m.p_up_one(np.full(F.N_FEATURES, -1e308)) == 0.0


@pytest.mark.parametrize(
    "change, match",
    [
        ({"coef": [1.0] * (F.N_FEATURES + 1)}, "coef"),
        ({"coef": [1.0] * (F.N_FEATURES - 1) + [math.nan]}, "coef"),
        ({"coef": [1] * F.N_FEATURES}, "coef"),  # ints are not what the loader writes
        ({"scale": [1.0] * (F.N_FEATURES - 1) + [0.0]}, "scale"),
        ({"mean": [math.inf] * F.N_FEATURES}, "mean"),
        ({"intercept": math.nan}, "intercept"),
        ({"up_is_first": 0}, "up_is_first"),
        ({"extra": 1}, "expected keys"),
    ],
)
def test_bad_parameters_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        M._LogisticRow.from_dict({**GOOD, **change})
