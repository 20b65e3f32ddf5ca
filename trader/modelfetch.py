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

``info`` holds the MLmodel metadata, the registry name, version and tags, and
``serving``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .engine import DEFAULT_ENTRY_THRESHOLD, signal_of
from .model import (
    EQUIVALENCE_TOL,
    RESULT_FILE,
    DirectionModel,
    LogisticModel,
    ModelLoadError,
    _check_uris,
    _download,
    _LogisticRow,
    _read_mlmodel,
    _registry_info,
    load_local_model,
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
    served = LogisticModel(params)
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
    local = _download(uri, tracking_uri, out)
    model = load_local_model(local, uri)
    info = dict(model.info)
    info.update(_registry_info(uri))
    params = _LogisticRow.of(model.estimator, model._up)
    reason = "not a StandardScaler -> LogisticRegression pipeline or a bare LogisticRegression"
    if params is not None:
        # what the trader will build: the parameters after the JSON round trip
        params = _LogisticRow.from_dict(json.loads(json.dumps(params.to_dict(), allow_nan=False)))
        reason, worst = check_equivalent(params, model)
        info["equivalence"] = {"max_abs_diff": worst, "tolerance": EQUIVALENCE_TOL, "probe_rows": N_PROBES}
        if reason is None:
            info["serving"] = "numpy (logistic parameters exported by the loader process)"
            return {"ok": True, "serving": "logistic", "uri": uri, "params": params.to_dict(), "info": info}
    info["serving"] = "scikit-learn"
    info["fast_path_rejected"] = reason
    skops_path, _ = _read_mlmodel(local, uri)
    return {"ok": True, "serving": "sklearn", "uri": uri, "skops_path": str(skops_path), "info": info}


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
    if len(args) != 3:
        print("usage: python -m quantramp.trader.modelfetch MODEL_URI TRACKING_URI OUT_DIR", file=sys.stderr)
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
