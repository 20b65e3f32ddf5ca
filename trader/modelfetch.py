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
  bit for bit on :data:`N_PROBES` probe rows, in batch and one row at a time.
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
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .model import (
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

#: probe rows on which the exported parameters must reproduce predict_proba exactly
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


def check_exact(params: _LogisticRow, model: DirectionModel) -> str | None:
    """None if ``params`` reproduce ``model``'s ``predict_proba`` bit for bit on :func:`probe_rows`, else why not."""
    X = probe_rows(params)
    ref = np.asarray(model.p_up(X), dtype=np.float64)
    got = params.batch(X)
    if not np.array_equal(got, ref):
        bad = got != ref
        return (
            f"exported parameters differ from predict_proba on {int(bad.sum())} of {len(X)} probe rows "
            f"(max |diff| {float(np.max(np.abs(got - ref))):.3g})"
        )
    served = LogisticModel(params)
    for i, x in enumerate(X[:N_PROBES_ONE_ROW]):
        one = float(model.estimator.predict_proba(x.reshape(1, -1))[0, model._up])
        if served.p_up_one(x) != one:
            return f"exported parameters differ from one-row predict_proba on probe row {i}"
    return None


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
        reason = check_exact(params, model)
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
