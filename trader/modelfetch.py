"""The model loader process of :func:`quantramp.trader.model.load_model`.

``python -m quantramp.trader.modelfetch MODEL_URI TRACKING_URI OUT_DIR`` checks the
tracking server, downloads the model into OUT_DIR, loads it in this (short-lived)
process with :func:`~quantramp.trader.model.load_local_model` (skops, our
allow-list, the checks of :class:`~quantramp.trader.model.DirectionModel`) and
writes its answer to ``OUT_DIR/quantramp-load-result.json``
(:data:`~quantramp.trader.model.RESULT_FILE`), then exits. The trader therefore
never imports MLflow, skops, scikit-learn or SciPy for the logistic model.

The answer, one JSON object:

- ``{"ok": true, "serving": "logistic", "uri", "params", "info"}``: the registered
  logistic model (``StandardScaler -> LogisticRegression`` or a bare binary
  ``LogisticRegression``); ``params`` are its fitted parameters as plain floats
  (:meth:`~quantramp.trader.model._LogisticRow.to_dict`; ``json`` writes floats
  with ``repr``, which round-trips exactly). They are exported only after the
  parameters *as the trader will read them back* reproduced ``predict_proba``
  within :data:`~quantramp.trader.model.EQUIVALENCE_TOL` on :data:`N_PROBES` probe
  rows, in batch and one row at a time, with no decision flipped at the entry
  thresholds (:func:`check_equivalent`); ``info["equivalence"]`` holds the largest
  |Δp| seen.
- ``{"ok": true, "serving": "sklearn", "uri", "skops_path", "info"}``: any other
  estimator (or a logistic model that failed that check; ``info["fast_path_rejected"]``
  says why); the trader loads the skops file ``skops_path`` (inside OUT_DIR) in
  process, with the same allow-list.
- ``{"ok": false, "error"}`` (exit code 1): the model cannot be loaded; the
  message is what :class:`~quantramp.trader.model.ModelLoadError` said.

- ``{"ok": true, "serving": "pyfunc", "uri", "model_dir", "info"}``: a model whose loading
  runs its code (pickled scikit-learn, MLflow pyfunc), accepted only with
  ``QR_ALLOW_PICKLE_MODELS=true`` (this process inherits the trader's environment). It is *not*
  loaded here (this process holds MLflow's credentials): the trader starts the model server
  process on ``model_dir`` (:func:`serve`).

Every ``ok`` answer has ``feature_spec`` (:meth:`~quantramp.trader.features.FeatureSpec.to_dict`),
checked against the signature by :func:`~quantramp.trader.model.inspect_model`. ``info`` holds
the MLmodel metadata, the registry name, version and tags, and ``serving``.

``python -m quantramp.trader.modelfetch serve MODEL_DIR SPEC_JSON`` is the model server
process (:func:`serve`, used by :class:`~quantramp.trader.model.PyfuncModel`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .engine import DEFAULT_ENTRY_THRESHOLD, signal_of
from .features import FEATURE_CLIP, FeatureSpec
from .model import (
    EQUIVALENCE_TOL,
    RESULT_FILE,
    DirectionModel,
    LogisticModel,
    ModelLoadError,
    _check_uris,
    _download,
    _load_skops,
    _LogisticRow,
    _registry_info,
    allow_pickle_models,
    inspect_model,
)

#: probe rows on which the exported parameters must reproduce predict_proba (within EQUIVALENCE_TOL)
N_PROBES = 512
#: of which this many are also checked one row at a time (the engine's path)
N_PROBES_ONE_ROW = 128
#: spreads (in standard deviations of the training features) of the probe rows
PROBE_SPREADS = (0.1, 1.0, 3.0, 30.0)


def probe_rows(params: _LogisticRow, n: int = N_PROBES, seed: int = 0) -> np.ndarray:
    """Deterministic feature rows around the training distribution: ``mean + scale * z``, z ~ N(0, s^2)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, params.n)) * np.resize(np.asarray(PROBE_SPREADS), n)[:, None]
    mean = np.zeros(params.n) if params.mean is None else np.asarray(params.mean)
    scale = np.ones(params.n) if params.scale is None else np.asarray(params.scale)
    X = mean + scale * z
    X[0] = mean  # decision value = intercept
    return X


def decision_thresholds() -> tuple[float, ...]:
    """Entry thresholds at which served and registered P(up) must give the same call: 0 (the
    sign), the default (:data:`~quantramp.trader.engine.DEFAULT_ENTRY_THRESHOLD`) and the pod's
    ``QR_ENTRY_THRESHOLD`` if set (this process inherits the trader's environment)."""
    out = [0.0, DEFAULT_ENTRY_THRESHOLD]
    try:
        t = float(os.environ.get("QR_ENTRY_THRESHOLD", ""))
    except ValueError:
        t = math.nan
    if math.isfinite(t) and 0.0 <= t < 0.5 and t not in out:
        out.append(t)
    return tuple(out)


def check_equivalent(params: _LogisticRow, model: DirectionModel, tol: float = EQUIVALENCE_TOL) -> tuple[str | None, float]:
    """Whether ``params`` serve the same model as ``model`` on :func:`probe_rows`: ``(None, max |Δp|)``
    if so, else ``(why not, max |Δp|)``.

    The contract (see :mod:`quantramp.trader.model` for why it is not bit-identity): on every probe
    row, in batch (:meth:`LogisticModel.p_up` against ``predict_proba``) and one row at a time for
    the first :data:`N_PROBES_ONE_ROW` rows (the engine's :meth:`LogisticModel.p_up_one` against
    one-row ``predict_proba``), |Δp| <= ``tol`` (a probability, 0-1), and the engine's decision
    rule gives the same call at every threshold of :func:`decision_thresholds`. A non-finite
    output on either side is a failure.
    """
    X = probe_rows(params)
    served = LogisticModel(params, feature_spec=model.feature_spec)
    ref = np.asarray(model.p_up(X), dtype=np.float64)
    got = np.asarray(served.p_up(X), dtype=np.float64)
    k = N_PROBES_ONE_ROW
    ref_one = np.array([float(model.estimator.predict_proba(x.reshape(1, -1))[0, model._up]) for x in X[:k]])
    got_one = np.array([served.p_up_one(x) for x in X[:k]])
    pairs = (("batch", got, ref), ("one-row", got_one, ref_one))
    worst = 0.0
    for what, a, b in pairs:
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return f"non-finite P(up) on the probe rows ({what})", math.inf
        worst = max(worst, float(np.max(np.abs(a - b))))
    for what, a, b in pairs:
        diff = np.abs(a - b)
        if float(diff.max()) > tol:
            n, i = int((diff > tol).sum()), int(diff.argmax())
            return (
                f"exported parameters differ from {what} predict_proba by more than {tol:g} on {n} of "
                f"{len(a)} probe rows (max |diff| {float(diff.max()):.3g} on row {i})"
            ), worst
        for t in decision_thresholds():
            flips = np.flatnonzero(signal_of(a, t) != signal_of(b, t))
            if len(flips):
                return (
                    f"exported parameters flip the {what} decision at entry threshold {t:g} on probe row "
                    f"{int(flips[0])} (P(up) {a[flips[0]]!r} against {b[flips[0]]!r})"
                ), worst
    return None, worst


def export(uri: str, tracking_uri: str, out: Path) -> dict[str, Any]:
    """Download and load ``uri`` into ``out``; return the answer for the trader (see the module docstring)."""
    uri, tracking_uri = _check_uris(uri, tracking_uri)
    allow = allow_pickle_models(os.environ)
    local = _download(uri, tracking_uri, out)
    files = inspect_model(local, uri, allow_pickle=allow)
    spec = files.spec.to_dict()
    if files.kind != "skops":
        info = {"metadata": files.metadata, "serving": "model server process", **_registry_info(uri)}
        return {"ok": True, "serving": "pyfunc", "uri": uri, "model_dir": str(local), "info": info,
                "feature_spec": spec}
    model = DirectionModel(
        _load_skops(files.skops_path, uri), uri=uri,  # type: ignore[arg-type]
        info={"metadata": files.metadata, "serving": "scikit-learn"}, feature_spec=files.spec,
    )
    info = dict(model.info)
    info.update(_registry_info(uri))
    params = _LogisticRow.of(model.estimator, model._up, files.spec.n_features)
    reason = "not a StandardScaler -> LogisticRegression pipeline or a bare LogisticRegression"
    if params is not None:
        # what the trader will build: the parameters after the JSON round trip
        params = _LogisticRow.from_dict(json.loads(json.dumps(params.to_dict(), allow_nan=False)), params.n)
        reason, worst = check_equivalent(params, model)
        info["equivalence"] = {"max_abs_diff": worst, "tolerance": EQUIVALENCE_TOL, "probe_rows": N_PROBES}
        if reason is None:
            info["serving"] = "numpy (logistic parameters exported by the loader process)"
            return {"ok": True, "serving": "logistic", "uri": uri, "params": params.to_dict(), "info": info,
                    "feature_spec": spec}
    info["serving"] = "scikit-learn"
    info["fast_path_rejected"] = reason
    return {"ok": True, "serving": "sklearn", "uri": uri, "skops_path": str(files.skops_path), "info": info,
            "feature_spec": spec}


# -- the model server process (PyfuncModel) ---------------------------------------------

#: probe rows the model server checks a model on before it says it is ready
N_SERVER_PROBES = 16


def p_up_of_output(out: Any, n: int) -> np.ndarray:
    """P(up), shape (n,), from what a pyfunc ``predict`` returned for n rows.

    Accepted: shape (n,) or (n, 1) = P(up); (n, 2) = class probabilities, P(up) the column
    named ``1``, ``"1"``, ``"up"`` or ``"p_up"`` of a DataFrame, else the second column; a dict
    with key ``p_up`` or ``probabilities`` holding one of those. Every value finite in [0, 1].
    Raises ValueError saying what was returned.
    """
    if isinstance(out, dict):
        out = out.get("p_up", out.get("probabilities"))
    cols = list(getattr(out, "columns", []))
    a = np.asarray(out, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 2:
        named = [i for i, c in enumerate(cols) if str(c) in ("1", "up", "p_up")]
        a = a[:, named[0] if len(named) == 1 else 1]
    elif a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.shape != (n,):
        raise ValueError(
            f"the model returned shape {a.shape} for {n} rows; it must return P(up) (shape (n,)) or the two class "
            "probabilities (shape (n, 2), class 1 = up)"
        )
    if not (np.isfinite(a) & (a >= 0) & (a <= 1)).all():
        bad = a[~(np.isfinite(a) & (a >= 0) & (a <= 1))][:3].tolist()
        raise ValueError(f"the model returned values outside [0, 1] (e.g. {bad}); it must return P(up)")
    return a


def _server_predictor(model_dir: Path, spec: FeatureSpec) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """Load the model in ``model_dir`` (this runs its code) and return (rows -> P(up), description)."""
    import pandas as pd
    from mlflow.models import Model

    cols = list(spec.features)
    mlmodel = Model.load(str(model_dir / "MLmodel"))
    if "sklearn" in mlmodel.flavors:
        import mlflow.sklearn

        est = mlflow.sklearn.load_model(str(model_dir))
        model = DirectionModel(est, uri=str(model_dir), feature_spec=spec)  # the same checks as a skops model
        named = getattr(est, "feature_names_in_", None) is not None

        def predict_sklearn(X: np.ndarray) -> np.ndarray:
            return model.p_up(pd.DataFrame(X, columns=cols) if named else X)

        return predict_sklearn, f"scikit-learn {type(est).__name__} (pickled)"
    import mlflow.pyfunc

    pm = mlflow.pyfunc.load_model(str(model_dir))

    def predict_pyfunc(X: np.ndarray) -> np.ndarray:
        return p_up_of_output(pm.predict(pd.DataFrame(X, columns=cols)), len(X))

    return predict_pyfunc, f"mlflow pyfunc ({mlmodel.flavors['python_function'].get('loader_module')})"


def serve(model_dir: str | Path, spec_json: str, stdin=None, proto=None) -> int:
    """The model server process: load the model in ``model_dir`` once, then answer requests until stdin closes.

    Protocol (one JSON object per line): first an answer ``{"ready": true, "info": {...}}`` after
    the model gave P(up) in [0, 1] for :data:`N_SERVER_PROBES` probe rows (in one call and one row
    at a time), or ``{"ready": false, "error": ...}`` (exit 1). Then for each request
    ``{"X": rows, "each": bool}`` (rows of the spec's features; ``each``: call the model one row
    at a time) the answer ``{"p": [P(up), ...]}`` or ``{"error": ...}``. The model's own prints
    go to stderr: stdout carries only the protocol.
    """
    if proto is None:
        proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
        os.dup2(2, 1)  # anything the model's code prints goes to stderr, not into the protocol
        sys.stdout = sys.stderr
    stdin = sys.stdin if stdin is None else stdin

    def answer(obj: dict) -> None:
        proto.write(json.dumps(obj, default=str) + "\n")
        proto.flush()

    try:
        spec = FeatureSpec.model_validate_json(spec_json)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predict, what = _server_predictor(Path(model_dir), spec)
            X = np.clip(np.random.default_rng(0).standard_normal((N_SERVER_PROBES, spec.n_features)) * 2.0,
                        -FEATURE_CLIP, FEATURE_CLIP)
            X[0] = 0.0
            p = predict(X)
            one = np.array([predict(x.reshape(1, -1))[0] for x in X])
            for got in (p, one):
                if np.asarray(got).shape != (len(X),) or not (np.isfinite(got) & (got >= 0) & (got <= 1)).all():
                    raise ValueError(f"the model returned {np.asarray(got)[:4]!r}..., not P(up) in [0, 1]")
    except Exception as exc:  # noqa: BLE001 - any failure: the trader refuses the model
        answer({"ready": False, "error": f"{model_dir}: the model cannot be served: {type(exc).__name__}: {exc}"})
        return 1
    answer({"ready": True, "info": {"server": what, "probe_p_up": [float(v) for v in p[:4]]}})
    for line in stdin:
        try:
            req = json.loads(line)
            X = np.asarray(req["X"], dtype=np.float64)
            if X.ndim != 2 or X.shape[1] != spec.n_features:
                raise ValueError(f"expected rows of {spec.n_features} features, got shape {X.shape}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if req.get("each"):
                    p = np.array([predict(x.reshape(1, -1))[0] for x in X], dtype=np.float64)
                else:
                    p = np.asarray(predict(X), dtype=np.float64)
            answer({"p": p.tolist()})
        except Exception as exc:  # noqa: BLE001 - the trader decides what a failed call means
            answer({"error": f"{type(exc).__name__}: {exc}"})
    return 0


def _write(out: Path, result: dict[str, Any]) -> None:
    try:
        text = json.dumps(result, allow_nan=False, default=str)
    except ValueError as exc:  # a NaN/inf in the metadata: say so rather than write invalid JSON
        text = json.dumps({"ok": False, "error": f"{result.get('uri', '')}: result not serialisable: {exc}"})
    tmp = out / (RESULT_FILE + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out / RESULT_FILE)


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 with an ``ok`` answer, 1 with an error answer, 2 on bad usage."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        parser = argparse.ArgumentParser(prog="python -m quantramp.trader.modelfetch serve")
        parser.add_argument("model_dir")
        parser.add_argument("spec_json")
        ns = parser.parse_args(args[1:])
        return serve(ns.model_dir, ns.spec_json)
    if len(args) != 3:
        print("usage: python -m quantramp.trader.modelfetch MODEL_URI TRACKING_URI OUT_DIR\n"
              "       python -m quantramp.trader.modelfetch serve MODEL_DIR SPEC_JSON", file=sys.stderr)
        return 2
    uri, tracking_uri, out = args[0], args[1], Path(args[2])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result, code = export(uri, tracking_uri, out), 0
    except ModelLoadError as exc:
        result, code = {"ok": False, "error": str(exc)}, 1
    except Exception as exc:  # noqa: BLE001 - any failure means no model; the trader refuses to start
        result, code = {"ok": False, "error": f"{uri}: the model loader failed: {type(exc).__name__}: {exc}"}, 1
    _write(out, result)
    return code


if __name__ == "__main__":
    sys.exit(main())
