"""Load a registered model from MLflow and predict P(next bar closes up).

The model is loaded with the scikit-learn flavour (not pyfunc), so serving is
a plain ``predict_proba`` on a float64 numpy row. Only models saved in the
skops format are accepted, and they are loaded with *our* allow-list of types
(:data:`TRUSTED_TYPES`), not the one written into the model by whoever logged
it. Pickle and cloudpickle models are refused: they execute code on load, and
MLflow 3.17 loads them by default (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``
defaults to true).

Two loaders:

- :func:`load_model` (what the trader pod uses, issue #3: RSS <= 250 MB) runs
  the download and the skops load in a short-lived child process
  (:mod:`.modelfetch`), so MLflow, skops, scikit-learn and SciPy (about 200 MB
  resident) never enter the trader. For the logistic model that
  ``quantramp-trader train`` registers (``StandardScaler -> LogisticRegression``
  or a bare binary ``LogisticRegression``) the child exports the fitted
  parameters as JSON (floats round-trip exactly) after checking, on probe rows,
  that they reproduce ``predict_proba`` within :data:`EQUIVALENCE_TOL` and take
  the same decisions at the entry thresholds (:func:`.modelfetch.check_equivalent`);
  the trader serves them with :class:`LogisticModel` (numpy and ``math`` only). Any other estimator (a
  random forest, ...) is loaded into the trader from the files the child
  downloaded, as a :class:`DirectionModel`.
- :func:`load_model_in_process` does everything in the calling process and
  always returns a :class:`DirectionModel` (the estimator itself).

Both serve one row of the logistic model without scikit-learn's per-call
validation (hundreds of microseconds), with the same arithmetic
(:class:`_LogisticRow`).

The contract between the served model and the registered one is *equivalence
within a stated tolerance*, not bit-identity: max |Δp| <= :data:`EQUIVALENCE_TOL`
(1e-12) on every probe row, in batch and one row at a time, and no decision of
the engine's rule (:func:`.engine.signal_of`) that flips at the entry thresholds.
Bit-identity cannot be the contract: ``predict_proba`` computes the decision value
with a BLAS dot product whose summation order and use of fused multiply-add
depend on the CPU and on the OpenBLAS kernel chosen at run time (Intel and AMD
machines of the same kind differ in the last bit: 0.48188018069417976 against
...87), while the one-row path here sums left to right. Rounding differences of
a 6-term dot product are of the order of 1e-15 relative; 1e-12 is three orders
above that and still far below anything a decision can see (the engine acts on
P(up) against 0.5 +- a threshold of 0.03 by default). A parameter that is really
wrong (a changed coefficient, a flipped class order) moves P(up) by far more and
is refused (the loader then serves scikit-learn itself).

Any failure (MLflow unreachable, unknown model, wrong feature set, the loader
process crashing or answering nonsense) raises :class:`ModelLoadError`: the
trader refuses to start rather than guess.

The model contract (:func:`inspect_model`, run by the loader process before anything of the
model is loaded):

- Features: the model's :class:`~.features.FeatureSpec`, from the MLmodel metadata key
  :data:`~.features.SPEC_METADATA_KEY` (``quantramp-trader train`` writes it); without one,
  the signature's input names with the default windows; without names either, the six
  default features (every model registered before specs existed). The served model carries
  it as ``model.feature_spec``; ``model.feature_spec.stream()`` is the trader's FeatureStream.
- Signature: a model with a spec (or a pyfunc model) must have an MLflow signature whose
  input columns are the spec's feature names, in order, of type double or float; an unnamed
  tensor signature is accepted only for spec-less scikit-learn models and must have the
  right number of columns. An unknown feature name, a bad window, a name or order mismatch
  or a wrong column count is refused with a message saying what to change.
- Serialisation: scikit-learn saved with skops (our allow-list) is the default and the only
  thing loaded unless the platform sets :data:`ALLOW_PICKLE_ENV` (``QR_ALLOW_PICKLE_MODELS=true``)
  on the trader. Then pickle/cloudpickle scikit-learn models and MLflow pyfunc models
  (cloudpickled ``python_model`` or "models from code": loading either runs the model's code)
  are accepted and served by :class:`PyfuncModel`: a long-lived *model server process*
  (:func:`.modelfetch.serve`) that loads the model once from the files the loader process
  downloaded, with an environment stripped of the trader's secrets and of MLflow's
  credentials, and answers P(up) for feature rows over a pipe; the trader makes itself
  non-dumpable first (:func:`make_undumpable`), so the model's code, running as the same
  user, cannot read the trader's credentials from ``/proc``. The trader itself never
  imports MLflow, pandas-heavy pyfunc machinery or the model's own libraries (the 250 MB RSS
  budget, and user code kept out of the process that holds the broker session and the kill
  latch); the server process's memory counts against the pod's limit, not the trader's RSS.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from pydantic import TypeAdapter, ValidationError

from .features import DEFAULT_SPEC, N_FEATURES, SPEC_METADATA_KEY, FeatureSpec

log = logging.getLogger(__name__)

#: types beyond skops' defaults that a quantramp model may contain
TRUSTED_TYPES: tuple[str, ...] = ("sklearn.tree._tree.Tree",)
#: seconds to wait for the MLflow server's health endpoint
HEALTH_TIMEOUT_S = 5.0
#: seconds the loader process may take (download + skops load + checks) before it is killed
LOAD_TIMEOUT_S = 300.0
#: the loader process's answer, written into the download directory
RESULT_FILE = "quantramp-load-result.json"
#: max |P(up) served - P(up) of predict_proba| (a probability, 0-1) on the loader's probe rows
#: for the numpy fast path to be used; see the module docstring for why not 0 (bit-identity)
EQUIVALENCE_TOL = 1e-12
#: the trader's environment variable that allows models whose loading runs their code
#: (pickle/cloudpickle scikit-learn, MLflow pyfunc); anything but true/false is an error
ALLOW_PICKLE_ENV = "QR_ALLOW_PICKLE_MODELS"
#: seconds the model server process may take to answer one P(up) request
PREDICT_TIMEOUT_S = 30.0
#: environment variables the model server process inherits (nothing secret: no MLflow, broker,
#: Redis or Postgres settings); names starting with these prefixes too
SERVER_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHASHSEED",
                   "VIRTUAL_ENV", "QR_ALLOW_PICKLE_MODELS")
SERVER_ENV_KEEP_PREFIXES = ("OMP_", "MKL_", "OPENBLAS_")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the trader must not trade."""


class ModelServingError(RuntimeError):
    """The model server process of a :class:`PyfuncModel` failed, timed out or answered nonsense."""


def allow_pickle_models(env: Any = None) -> bool:
    """Whether :data:`ALLOW_PICKLE_ENV` (``QR_ALLOW_PICKLE_MODELS``) allows models whose loading runs
    their code. ``env``: a mapping (default ``os.environ``). Unset or empty: False. Parsed as pydantic
    parses a bool (true/false, 1/0, yes/no, on/off); anything else raises :class:`ModelLoadError`."""
    raw = str((os.environ if env is None else env).get(ALLOW_PICKLE_ENV, "") or "").strip()
    if not raw:
        return False
    try:
        return TypeAdapter(bool).validate_python(raw)
    except ValidationError:
        raise ModelLoadError(f"{ALLOW_PICKLE_ENV}={raw!r} must be true or false") from None


@dataclass
class DirectionModel:
    """A fitted binary classifier whose class 1 means "next bar closes up".

    estimator: a scikit-learn classifier with ``predict_proba`` taking float64
    arrays of shape (n, feature_spec.n_features). uri: where it came from. info: MLflow
    details (name, version, tags) when loaded from the registry. feature_spec: the
    features it takes (default: the six built-in ones); ``feature_spec.stream()`` serves it.
    Raises :class:`ModelLoadError` for an estimator that does not fit the spec.
    """

    estimator: Any
    uri: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    feature_spec: FeatureSpec = DEFAULT_SPEC

    def __post_init__(self) -> None:
        if not hasattr(self.estimator, "predict_proba"):
            raise ModelLoadError(f"model {self.uri!r} has no predict_proba")
        classes = list(getattr(self.estimator, "classes_", []))
        if len(classes) != 2 or 1 not in [int(c) for c in classes]:
            raise ModelLoadError(f"model {self.uri!r} must be a binary classifier with class 1, got {classes}")
        self._up = [int(c) for c in classes].index(1)
        spec = self.feature_spec
        n_in = getattr(self.estimator, "n_features_in_", spec.n_features)
        if n_in != spec.n_features:
            raise ModelLoadError(
                f"model {self.uri!r} expects {n_in} features, the trader computes {spec.n_features} "
                f"({list(spec.features)}): its feature spec must list exactly the columns it was fitted on"
            )
        names = getattr(self.estimator, "feature_names_in_", None)
        if names is not None and [str(v) for v in names] != list(spec.features):
            raise ModelLoadError(
                f"model {self.uri!r} was fitted on columns {[str(v) for v in names]}, its feature spec computes "
                f"{list(spec.features)}: fit it on the spec's columns in the spec's order"
            )
        self._fast = _LogisticRow.of(self.estimator, self._up, spec.n_features)

    @property
    def fast_path(self) -> bool:
        """True if :meth:`p_up_one` evaluates the fitted logistic parameters directly."""
        return self._fast is not None

    def p_up(self, X: np.ndarray) -> np.ndarray:
        """P(up) for rows of features: X shape (n, N_FEATURES) float64 -> shape (n,) in [0, 1]."""
        return self.estimator.predict_proba(np.asarray(X, dtype=float))[:, self._up]

    def p_up_rows(self, X: np.ndarray) -> np.ndarray:
        """:meth:`p_up_one` of every row of finite ``X`` (shape (n, N_FEATURES)), bit for bit: the
        same elementwise IEEE operations in the same order, no BLAS (used by the batch replay;
        one ``predict_proba`` call per row without the fast path)."""
        return _rows_as_one(self._fast, X, self.p_up_one)

    def p_up_one(self, x: np.ndarray) -> float:
        """P(up) for one feature row, shape (N_FEATURES,)."""
        fast = self._fast
        if fast is not None:
            p = fast(x)
            if p is not None:
                return p
        return float(self.p_up(np.asarray(x, dtype=float).reshape(1, -1))[0])


def _rows_as_one(fast: "_LogisticRow | None", X: np.ndarray, one) -> np.ndarray:
    """``one(x)`` for every row of ``X``: ``fast.rows`` where it is defined, ``one`` for the rest."""
    X = np.asarray(X, dtype=float)
    if fast is None:
        return np.array([one(x) for x in X])
    p = fast.rows(X)
    bad = ~np.isfinite(p)
    if bad.any():
        p[bad] = [one(x) for x in X[bad]]
    return p


def _expit(d: float) -> float:
    """The logistic function exactly as ``scipy.special.expit`` computes it for a float64.

    SciPy (its ``xsf`` library, ``log_exp.h``) evaluates ``1 / (1 + std::exp(-x))``;
    ``math.exp`` is the same C library ``exp``, so the result is the same double.
    ``exp`` overflows to +inf for ``-d`` > ~709.78, where C gives ``1 / inf == 0.0``
    and Python raises OverflowError: that is 0.0 here too. (numpy's ``np.exp`` is not
    used: on AVX-512 machines it has its own vectorised implementation.)
    """
    try:
        return 1.0 / (1.0 + math.exp(-d))
    except OverflowError:
        return 0.0


class _LogisticRow:
    """P(class ``up``) of a fitted binary logistic model from its parameters, without scikit-learn.

    Built from exactly ``LogisticRegression`` or ``Pipeline([StandardScaler, LogisticRegression])``
    (the classes themselves, not subclasses; :meth:`of`), or from the plain floats
    :meth:`to_dict` exported (:meth:`from_dict`). Computes what ``predict_proba``
    computes, in the same order and with the same float64 operations:

    - one row (:meth:`__call__`): ``z_i = (x_i - mean_i) / scale_i``,
      ``d = sum_i z_i * coef_i`` (left to right; BLAS may order or fuse the sum
      differently, so this equals ``predict_proba`` within :data:`EQUIVALENCE_TOL`,
      not always bit for bit) ``+ intercept``, ``p = 1 / (1 + exp(-d))`` (:func:`_expit`),
      ``1 - p`` when class 1 is column 0. Returns ``None`` for a row of the wrong
      length or a non-finite decision value (a NaN or infinite feature, or
      overflow); callers then use the batch path, which raises like
      ``predict_proba`` or returns what it returns.
    - rows (:meth:`batch`): the numpy operations of ``StandardScaler.transform``
      and ``LogisticRegression.decision_function`` in scikit-learn 1.9 (copy,
      ``X -= mean``, ``X /= scale``, ``X @ coef.T + intercept``, so the same BLAS
      call), then :func:`_expit` per element and ``1 - p`` for column 0, as
      ``LinearClassifierMixin._predict_proba_lr`` does for two classes. Invalid
      input raises ``ValueError`` as scikit-learn's validation does.

    Equivalence with ``predict_proba`` within :data:`EQUIVALENCE_TOL` is tested on real
    feature rows (tests/unit/trader/test_trader_fastpath.py, test_trader_model_loader.py)
    and checked again on probe rows by the loader process before it exports a model
    (:func:`.modelfetch.check_equivalent`).
    """

    __slots__ = ("mean", "scale", "coef", "intercept", "up_is_first", "n", "_mean", "_scale", "_coef", "_intercept")

    def __init__(
        self,
        mean: tuple[float, ...] | None,
        scale: tuple[float, ...] | None,
        coef: tuple[float, ...],
        intercept: float,
        up_is_first: bool,
    ) -> None:
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.scale = None if scale is None else tuple(float(v) for v in scale)
        self.coef = tuple(float(v) for v in coef)
        self.intercept = float(intercept)
        self.up_is_first = bool(up_is_first)
        self.n = len(self.coef)
        # the same array shapes scikit-learn holds: mean_/scale_ (n,), coef_ (1, n), intercept_ (1,)
        self._mean = None if self.mean is None else np.array(self.mean, dtype=np.float64)
        self._scale = None if self.scale is None else np.array(self.scale, dtype=np.float64)
        self._coef = np.array([self.coef], dtype=np.float64)
        self._intercept = np.array([self.intercept], dtype=np.float64)

    @classmethod
    def of(cls, est: Any, up: int, n: int = N_FEATURES) -> "_LogisticRow | None":
        """The evaluator for ``est`` if it is a supported fitted logistic model on ``n`` features, else None
        (imports scikit-learn)."""
        try:
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import StandardScaler
        except ImportError:  # pragma: no cover - sklearn is a dependency
            return None
        mean = scale = None
        clf = est
        if type(est) is Pipeline:
            steps = list(est.steps)
            if len(steps) != 2 or type(steps[0][1]) is not StandardScaler:
                return None
            sc, clf = steps[0][1], steps[1][1]
            for attr, on in (("mean_", sc.with_mean), ("scale_", sc.with_std)):
                if on and (getattr(sc, attr, None) is None or np.asarray(getattr(sc, attr)).dtype != np.float64):
                    return None
            if sc.with_mean:
                mean = tuple(float(v) for v in np.asarray(sc.mean_).ravel())
            if sc.with_std:
                scale = tuple(float(v) for v in np.asarray(sc.scale_).ravel())
        if type(clf) is not LogisticRegression:
            return None
        coef = np.asarray(getattr(clf, "coef_", None))
        intercept = np.asarray(getattr(clf, "intercept_", None))
        if (
            len(getattr(clf, "classes_", ())) != 2
            or coef.dtype != np.float64
            or coef.shape != (1, n)
            or intercept.dtype != np.float64
            or intercept.shape != (1,)
            or any(v is not None and len(v) != n for v in (mean, scale))
        ):
            return None
        return cls(mean, scale, tuple(float(v) for v in coef[0]), float(intercept[0]), up == 0)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain JSON values (``json`` writes floats with ``repr``: exact round trip)."""
        return {
            "mean": None if self.mean is None else list(self.mean),
            "scale": None if self.scale is None else list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "up_is_first": self.up_is_first,
        }

    @classmethod
    def from_dict(cls, d: Any, n: int = N_FEATURES) -> "_LogisticRow":
        """Inverse of :meth:`to_dict`; raises ``ValueError`` unless ``d`` is a valid model for rows of ``n`` features."""
        if not isinstance(d, dict) or set(d) != {"mean", "scale", "coef", "intercept", "up_is_first"}:
            raise ValueError(f"expected keys mean, scale, coef, intercept, up_is_first; got {d!r:.200}")

        def floats(name: str, optional: bool) -> tuple[float, ...] | None:
            v = d[name]
            if v is None and optional:
                return None
            if (
                not isinstance(v, list)
                or len(v) != n
                or not all(type(f) is float and math.isfinite(f) for f in v)
            ):
                raise ValueError(f"{name}: expected {n} finite floats, got {v!r:.200}")
            return tuple(v)

        mean, scale, coef = floats("mean", True), floats("scale", True), floats("coef", False)
        if scale is not None and 0.0 in scale:
            raise ValueError("scale: contains 0.0")
        intercept, up_is_first = d["intercept"], d["up_is_first"]
        if type(intercept) is not float or not math.isfinite(intercept):
            raise ValueError(f"intercept: expected a finite float, got {intercept!r}")
        if type(up_is_first) is not bool:
            raise ValueError(f"up_is_first: expected a bool, got {up_is_first!r}")
        return cls(mean, scale, coef, intercept, up_is_first)  # type: ignore[arg-type]

    def __call__(self, x: Any) -> float | None:
        """P(up) for one row (N_FEATURES numbers, any shape), or None to defer to :meth:`batch`."""
        row = np.asarray(x, dtype=float).ravel().tolist()
        if len(row) != self.n:
            return None
        mean, scale, coef = self.mean, self.scale, self.coef
        d = 0.0
        for i in range(self.n):
            z = row[i]
            if mean is not None:
                z = z - mean[i]
            if scale is not None:
                z = z / scale[i]
            d += z * coef[i]
        d = d + self.intercept
        if not math.isfinite(d):
            return None
        p = _expit(d)
        return 1.0 - p if self.up_is_first else p

    def _standardized(self, X: Any) -> np.ndarray:
        """``StandardScaler.transform(copy=True)``: a float64 copy (order 'K'), ``-= mean``, ``/= scale``."""
        Z = np.array(X, dtype=np.float64)
        if self._mean is not None:
            Z -= self._mean
        if self._scale is not None:
            Z /= self._scale
        return Z

    def rows(self, X: np.ndarray) -> np.ndarray:
        """:meth:`__call__` on every row of finite ``X`` (shape (n, N_FEATURES)) -> shape (n,),
        bit for bit: the same elementwise float64 operations, summed left to right; NaN for a
        row whose decision value is not finite (where ``__call__`` returns None)."""
        Z = self._standardized(X)
        d = np.zeros(len(Z))
        for i, c in enumerate(self.coef):
            d += Z[:, i] * c
        d += self.intercept
        out = np.array([_expit(v) if math.isfinite(v) else math.nan for v in d.tolist()])
        return 1.0 - out if self.up_is_first else out

    def batch(self, X: Any) -> np.ndarray:
        """P(up) for rows, shape (n, N_FEATURES) -> (n,): ``predict_proba(X)[:, up]`` with the same
        numpy/BLAS calls (bit for bit on the machine that runs both), within :data:`EQUIVALENCE_TOL`
        of it on any machine."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"Expected a 2D array, got an array of shape {X.shape}")
        if X.shape[1] != self.n:
            raise ValueError(f"X has {X.shape[1]} features, but the model is expecting {self.n} features as input")
        if not np.isfinite(X).all():
            raise ValueError("Input X contains NaN or infinity")
        if self._mean is not None or self._scale is not None:
            X = self._standardized(X)
            if not np.isfinite(X).all():
                raise ValueError("Input X contains infinity or a value too large for dtype('float64')")
        scores = (X @ self._coef.T + self._intercept).reshape(-1)
        p = np.array([_expit(d) for d in scores.tolist()], dtype=np.float64)
        return 1 - p if self.up_is_first else p


class LogisticModel:
    """The trader's logistic model without scikit-learn: numpy and ``math`` only (see :func:`load_model`).

    Same interface as :class:`DirectionModel` for the engine and the server
    (``p_up_one``, ``p_up``, ``fast_path``, ``uri``, ``info``, ``feature_spec``) and the same numbers
    as ``predict_proba`` of the estimator it was exported from within
    :data:`EQUIVALENCE_TOL` (see the module docstring).
    """

    fast_path = True

    def __init__(
        self, params: _LogisticRow, uri: str = "", info: dict[str, Any] | None = None,
        feature_spec: FeatureSpec | None = None,
    ) -> None:
        self.params = params
        self.uri = uri
        self.info: dict[str, Any] = dict(info or {})
        self.feature_spec = DEFAULT_SPEC if feature_spec is None else feature_spec
        if params.n != self.feature_spec.n_features:
            raise ModelLoadError(
                f"model {uri!r} has {params.n} coefficients, its feature spec computes {self.feature_spec.n_features}"
            )

    def p_up(self, X: np.ndarray) -> np.ndarray:
        """P(up) for rows of features: X shape (n, N_FEATURES) float64 -> shape (n,) in [0, 1]."""
        return self.params.batch(X)

    def p_up_rows(self, X: np.ndarray) -> np.ndarray:
        """:meth:`p_up_one` of every row of finite ``X`` (shape (n, N_FEATURES)), bit for bit
        (same elementwise IEEE operations, no BLAS; the batch replay uses it; :meth:`p_up` is
        ``predict_proba``'s BLAS path, which may differ from one row in the last bit)."""
        return _rows_as_one(self.params, X, self.p_up_one)

    def p_up_one(self, x: np.ndarray) -> float:
        """P(up) for one feature row, shape (N_FEATURES,); ``ValueError`` for a row ``predict_proba`` refuses."""
        p = self.params(x)
        if p is not None:
            return p
        return float(self.params.batch(np.asarray(x, dtype=float).reshape(1, -1))[0])

    def __repr__(self) -> str:
        return f"LogisticModel(uri={self.uri!r}, standardized={self.params.scale is not None})"


#: what :func:`load_model` returns
ServingModel = Union[DirectionModel, LogisticModel, "PyfuncModel"]


def _limit_http_retries() -> None:
    # MLflow's client retries for minutes by default; a trader should fail fast.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def check_tracking_server(tracking_uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise :class:`ModelLoadError` unless an http(s) MLflow server answers ``/health``.

    Non-HTTP tracking URIs (file:, sqlite:) are not checked.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    url = tracking_uri.rstrip("/") + "/health"
    try:
        r = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        raise ModelLoadError(f"MLflow tracking server {tracking_uri} is unreachable: {exc}") from exc
    if r.status_code != 200:
        raise ModelLoadError(f"MLflow tracking server {tracking_uri} is unhealthy: GET /health -> {r.status_code}")


@dataclass(frozen=True)
class ModelFiles:
    """An MLflow model directory that passed :func:`inspect_model` (nothing of it loaded yet).

    kind: ``"skops"`` (scikit-learn saved with skops: loaded with our allow-list),
    ``"sklearn-pickle"`` (scikit-learn pickle/cloudpickle) or ``"pyfunc"`` (an MLflow pyfunc
    model); the last two only with :data:`ALLOW_PICKLE_ENV`. path: the model directory.
    skops_path: the skops file (kind ``"skops"`` only). metadata: the MLmodel metadata (plus
    ``serialization_format`` for scikit-learn). spec: the features the model takes.
    """

    kind: str
    path: Path
    skops_path: Path | None
    metadata: dict[str, Any]
    spec: FeatureSpec


def _validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``field: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'spec'}: {e.get('msg', '')}" for e in exc.errors()
    )


def _spec_of(metadata: dict[str, Any], signature: Any, uri: str) -> tuple[FeatureSpec, bool]:
    """The model's feature spec and whether the model declared one (metadata or signature names).

    Metadata key :data:`~.features.SPEC_METADATA_KEY` (a dict, or its JSON) first; else the
    signature's input column names with the default windows; else :data:`~.features.DEFAULT_SPEC`.
    A legacy ``metadata["features"]`` list must agree with it. Raises :class:`ModelLoadError`.
    """
    raw = metadata.get(SPEC_METADATA_KEY)
    names = None
    if signature is not None and signature.inputs is not None and not signature.inputs.is_tensor_spec():
        names = [str(n) for n in signature.inputs.input_names()]
    if raw is not None:
        try:
            spec = FeatureSpec.model_validate_json(raw) if isinstance(raw, (str, bytes)) else FeatureSpec.model_validate(raw)
        except ValidationError as exc:
            raise ModelLoadError(
                f"{uri}: the trader cannot compute the model's features: its feature spec (MLmodel metadata "
                f"{SPEC_METADATA_KEY!r}) is invalid: {_validation_message(exc)}. Fix the spec (features: ret_K, "
                "range, close_loc, volume_z; windows 2..2000 bars) and register the model again"
            ) from None
        declared = True
    elif names is not None:
        try:
            spec = FeatureSpec(features=tuple(names))
        except ValidationError as exc:
            raise ModelLoadError(
                f"{uri}: the trader cannot compute the model's features: its signature's inputs {names} are not "
                f"built-in features ({_validation_message(exc)}). Name the inputs after the features the trader "
                f"computes (ret_K, range, close_loc, volume_z) or log a feature spec (metadata {SPEC_METADATA_KEY!r})"
            ) from None
        declared = True
    else:
        spec, declared = DEFAULT_SPEC, False
    legacy = metadata.get("features")
    if legacy is not None and [str(f) for f in legacy] != list(spec.features):
        raise ModelLoadError(
            f"{uri}: trained on features {list(legacy)}, the trader computes {list(spec.features)} "
            f"(metadata 'features' and the feature spec disagree)"
        )
    return spec, declared


def check_signature(signature: Any, spec: FeatureSpec, uri: str, *, need_names: bool) -> None:
    """Raise :class:`ModelLoadError` unless the MLflow ``signature`` takes the rows the trader computes
    for ``spec``.

    A column signature: its input names equal ``spec.features`` in order, each of type double or
    float. An unnamed tensor signature (what ``infer_signature`` gives for a numpy array): only
    if not ``need_names`` (a spec-less scikit-learn model), one tensor of shape (-1, n_features).
    No signature: only if not ``need_names``.
    """
    from mlflow.types import DataType

    cols = list(spec.features)
    how = (
        f"log the model with signature=infer_signature(pandas.DataFrame(X, columns={cols}), p_up) "
        "(quantramp-trader train does)"
    )
    if signature is None or signature.inputs is None:
        if need_names:
            raise ModelLoadError(f"{uri}: the model has no signature; {how}")
        return
    inputs = signature.inputs
    if inputs.is_tensor_spec():
        if need_names:
            raise ModelLoadError(f"{uri}: the model's signature takes an unnamed tensor, not named feature columns; {how}")
        specs = inputs.inputs
        shape = tuple(specs[0].shape) if len(specs) == 1 else ()
        if len(specs) != 1 or len(shape) != 2 or shape[1] != spec.n_features:
            raise ModelLoadError(
                f"{uri}: the model's signature takes tensors {[tuple(t.shape) for t in specs]}, the trader computes "
                f"rows of {spec.n_features} features {cols}: wrong column count; {how}"
            )
        return
    names = [str(n) for n in inputs.input_names()]
    if names != cols:
        raise ModelLoadError(
            f"{uri}: the model's signature takes inputs {names}, its feature spec computes {cols}: "
            f"they must be the same names in the same order; {how}"
        )
    types = inputs.input_types()
    bad = [n for n, t in zip(names, types) if t not in (DataType.double, DataType.float)]
    if bad:
        raise ModelLoadError(f"{uri}: the model's signature columns {bad} are not double or float; {how}")


def inspect_model(path: str | Path, uri: str = "", allow_pickle: bool = False) -> ModelFiles:
    """Check an MLflow model directory against the contract (module docstring) without loading the model.

    Reads ``MLmodel`` (imports MLflow), decides the kind (skops scikit-learn, pickled
    scikit-learn, pyfunc), refuses pickle/cloudpickle and pyfunc models unless
    ``allow_pickle`` (:func:`allow_pickle_models`), resolves the feature spec and checks the
    signature (:func:`check_signature`). Raises :class:`ModelLoadError` saying what to fix.
    """
    from mlflow.models import Model

    local = Path(path)
    uri = uri or str(local)
    try:
        mlmodel = Model.load(str(local / "MLmodel"))
    except Exception as exc:  # noqa: BLE001 - surface as a load error
        raise ModelLoadError(f"{uri}: not an MLflow model ({exc})") from exc
    meta = dict(mlmodel.metadata or {})
    allow_hint = f"or have the platform set {ALLOW_PICKLE_ENV}=true on the trader to accept models that run code"
    sk = mlmodel.flavors.get("sklearn")
    pyfunc = mlmodel.flavors.get("python_function")
    skops_path = None
    if sk is not None:
        fmt = sk.get("serialization_format", "pickle")
        meta["serialization_format"] = fmt
        if fmt == "skops":
            kind, skops_path = "skops", local / sk["pickled_model"]
        elif allow_pickle:
            kind = "sklearn-pickle"
        else:
            # pickle/cloudpickle run arbitrary code on load (and MLflow 3.17 allows it by default)
            raise ModelLoadError(
                f"{uri}: refusing a {fmt!r}-serialized model; log it with serialization_format='skops' "
                f"(quantramp-trader train does), {allow_hint}"
            )
    elif pyfunc is not None:
        if "model_code_path" in pyfunc:
            what = "a 'models from code' pyfunc model (loading it runs its code)"
        elif "python_model" in pyfunc:
            what = "a pyfunc model with a cloudpickled python_model (loading it unpickles code)"
        else:
            what = f"a pyfunc model of loader module {pyfunc.get('loader_module')!r} (loading it runs that code)"
        if not allow_pickle:
            raise ModelLoadError(
                f"{uri}: refusing {what}; log a scikit-learn model with serialization_format='skops', {allow_hint}"
            )
        kind = "pyfunc"
        meta["pyfunc"] = what
    else:
        raise ModelLoadError(f"{uri}: no sklearn flavour and no python_function flavour (flavours: {sorted(mlmodel.flavors)})")
    spec, declared = _spec_of(meta, mlmodel.signature, uri)
    check_signature(mlmodel.signature, spec, uri, need_names=declared or kind == "pyfunc")
    return ModelFiles(kind, local, skops_path, meta, spec)


def _load_skops(path: Path, uri: str) -> Any:
    """The estimator in a skops file, refused if it holds types outside :data:`TRUSTED_TYPES` (and skops' defaults)."""
    import skops.io

    untrusted = set(skops.io.get_untrusted_types(file=path))
    unexpected = sorted(untrusted - set(TRUSTED_TYPES))
    if unexpected:
        raise ModelLoadError(f"{uri}: refusing skops model with untrusted types {unexpected}")
    return skops.io.load(path, trusted=sorted(untrusted))


def load_local_model(path: str | Path, uri: str = "") -> DirectionModel:
    """Load an MLflow scikit-learn (skops) model directory already on disk, in this process (see :func:`load_model`).

    The returned model carries its feature spec (``feature_spec``). Raises :class:`ModelLoadError`
    for anything :func:`inspect_model` refuses, and for a pyfunc or pickled model (those run
    code: only :func:`load_model` serves them, in a model server process, and only with
    :data:`ALLOW_PICKLE_ENV`).
    """
    local = Path(path)
    uri = uri or str(local)
    files = inspect_model(local, uri, allow_pickle=False)
    est = _load_skops(files.skops_path, uri)  # type: ignore[arg-type]
    return DirectionModel(
        est, uri=uri, info={"metadata": files.metadata, "serving": "scikit-learn"}, feature_spec=files.spec
    )


def _check_uris(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """``(uri, tracking_uri)`` with the tracking URI defaulted from ``MLFLOW_TRACKING_URI``; raise if either is missing."""
    if not uri:
        raise ModelLoadError("no model URI given (QR_MODEL_URI)")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ModelLoadError("MLFLOW_TRACKING_URI is not set")
    return uri, tracking_uri


def _download(uri: str, tracking_uri: str, dst: str | Path) -> Path:
    """Download the model ``uri`` into the directory ``dst``; return the local model directory (imports MLflow)."""
    _limit_http_retries()
    check_tracking_server(tracking_uri)  # before importing MLflow (seconds): fail fast
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:  # noqa: BLE001 - any MLflow/HTTP error means no model
        raise ModelLoadError(f"cannot download {uri} from {tracking_uri}: {exc}") from exc


def load_model_in_process(uri: str, tracking_uri: str | None = None) -> DirectionModel:
    """Download ``uri`` (``models:/name/version`` or ``models:/name@alias``) and load it in this process.

    Imports MLflow, skops and scikit-learn here (about 200 MB resident); the
    trader uses :func:`load_model`. ``tracking_uri`` defaults to
    ``MLFLOW_TRACKING_URI``. Raises :class:`ModelLoadError` if MLflow is
    unreachable, the model does not exist, is not an sklearn model, or was
    trained on other features.
    """
    uri, tracking_uri = _check_uris(uri, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="quantramp-model-") as tmp:
        model = load_local_model(_download(uri, tracking_uri, tmp), uri)
    model.info.update(_registry_info(uri))
    return model


def load_model(uri: str, tracking_uri: str | None = None, *, timeout_s: float = LOAD_TIMEOUT_S) -> ServingModel:
    """Load ``uri`` (``models:/name/version`` or ``models:/name@alias``) for serving, keeping MLflow out of this process.

    A child process (``python -m quantramp.trader.modelfetch``, at most
    ``timeout_s`` seconds) checks the tracking server, downloads the model into
    a temporary directory, checks it against the contract (:func:`inspect_model`:
    feature spec, signature, serialisation), loads a skops model with our allow-list and
    checks it as :class:`DirectionModel` does. If it is the registered logistic model and
    its exported parameters reproduce ``predict_proba`` within
    :data:`EQUIVALENCE_TOL` on probe rows with no decision flipped at the entry
    thresholds (:func:`.modelfetch.check_equivalent`), this returns a :class:`LogisticModel` built from them: no MLflow,
    skops, scikit-learn or SciPy in this process. Another skops estimator is
    loaded here (skops, our allow-list; not MLflow) from the file the child
    downloaded and a :class:`DirectionModel` is returned;
    ``info["fast_path_rejected"]`` says why. A pickled scikit-learn or pyfunc model (only with
    ``QR_ALLOW_PICKLE_MODELS=true``) is served by a :class:`PyfuncModel` (a model server process).

    Every returned model has ``feature_spec`` (:class:`~.features.FeatureSpec`): serve it with
    ``model.feature_spec.stream()``.

    ``tracking_uri`` defaults to ``MLFLOW_TRACKING_URI``. ``info`` holds the
    MLmodel metadata, the registry name, version and tags, and ``serving``.
    Raises :class:`ModelLoadError` for anything :func:`load_model_in_process` or
    :func:`inspect_model` refuses, for a bad ``QR_ALLOW_PICKLE_MODELS``, and if the child
    process (or the model server process) fails, times out or answers nonsense.
    """
    uri, tracking_uri = _check_uris(uri, tracking_uri)
    allow_pickle_models()  # a malformed setting is refused here, before any download
    tmp = Path(tempfile.mkdtemp(prefix="quantramp-model-"))
    keep = False
    try:
        res = _run_loader(uri, tracking_uri, tmp, timeout_s)
        info = res.get("info")
        if res.get("uri") != uri or not isinstance(info, dict):
            raise ModelLoadError(f"model loader process for {uri} gave a malformed result: {res!r:.300}")
        try:  # absent: the default features (as for a model registered without a spec)
            raw_spec = res.get("feature_spec")
            spec = DEFAULT_SPEC if raw_spec is None else FeatureSpec.model_validate(raw_spec)
        except ValidationError as exc:
            raise ModelLoadError(
                f"model loader process for {uri} gave a bad feature spec: {_validation_message(exc)}"
            ) from None
        if res.get("serving") == "logistic":
            try:
                params = _LogisticRow.from_dict(res.get("params"), spec.n_features)
            except ValueError as exc:
                raise ModelLoadError(f"model loader process for {uri} exported bad parameters: {exc}") from exc
            return LogisticModel(params, uri=uri, info=info, feature_spec=spec)
        key = {"sklearn": "skops_path", "pyfunc": "model_dir"}.get(res.get("serving"), "")
        path = res.get(key)
        if not key or not isinstance(path, str) or not Path(path).resolve().is_relative_to(tmp.resolve()):
            raise ModelLoadError(f"model loader process for {uri} gave a malformed result: {res!r:.300}")
        if res["serving"] == "pyfunc":
            model = PyfuncModel.start(Path(path), tmp, uri=uri, info=info, feature_spec=spec, timeout_s=timeout_s)
            keep = True  # the server process reads the model's files; the model removes them on close
            return model
        log.info("model %s is served by scikit-learn in process: %s", uri, info.get("fast_path_rejected", ""))
        # the child checked the MLmodel (skops format, features); load the file it downloaded, without MLflow
        return DirectionModel(_load_skops(Path(path), uri), uri=uri, info=info, feature_spec=spec)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def server_env(env: Any = None) -> dict[str, str]:
    """The environment of the model server process: only :data:`SERVER_ENV_KEEP` and
    :data:`SERVER_ENV_KEEP_PREFIXES` of ``env`` (default ``os.environ``), so the model's code
    sees no MLflow, broker, Redis or database settings or credentials."""
    env = os.environ if env is None else env
    return {k: v for k, v in env.items() if k in SERVER_ENV_KEEP or k.startswith(SERVER_ENV_KEEP_PREFIXES)}


#: prctl(2) option: whether the process is "dumpable" (core dumps; /proc/<pid> files owned by its user; ptrace)
PR_SET_DUMPABLE = 4


def make_undumpable() -> bool:
    """Make this process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``, Linux): its ``/proc/<pid>`` files
    (``environ``: the Redis, MLflow, database and IB credentials; ``mem``) become root's, so a process of the same
    user, the model server running a registered model's own code, can no longer read them nor ptrace it; and
    it leaves no core dump. Returns False where prctl is not available (then nothing changed)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def server_command(model_dir: str | Path, spec: FeatureSpec) -> list[str]:
    """The command line of the model server process (:func:`.modelfetch.serve`); ``-P`` as in :func:`loader_command`."""
    return [sys.executable, "-P", "-m", "quantramp.trader.modelfetch", "serve", str(model_dir), spec.to_json()]


def _stop_server(proc: subprocess.Popen, workdir: Path | None) -> None:
    """Stop a model server process (stdin closed: it exits; killed after 5 s) and remove its files."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    except (OSError, ValueError):
        pass
    for f in (proc.stdout,):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


class PyfuncModel:
    """A model whose loading runs its code (a pyfunc, or a pickled scikit-learn model), served by a
    long-lived model server process (:func:`.modelfetch.serve`); see the module docstring for why.

    Same interface as :class:`LogisticModel` for the engine and the server (``p_up_one``,
    ``p_up``, ``p_up_rows``, ``fast_path`` False, ``uri``, ``info``, ``feature_spec``). Each call
    is one request over a pipe (JSON lines; floats round-trip exactly): rows of
    ``feature_spec.n_features`` float64 features in, P(up) in [0, 1] out. A failure of the
    server process (exit, timeout of :data:`PREDICT_TIMEOUT_S`, an error of the model, an
    output that is not a probability) raises :class:`ModelServingError`. :meth:`close` stops it
    (also done when the object is collected, and at exit).
    """

    fast_path = False

    def __init__(self, proc: subprocess.Popen, workdir: Path | None, uri: str, info: dict[str, Any],
                 feature_spec: FeatureSpec, timeout_s: float = PREDICT_TIMEOUT_S) -> None:
        self._proc = proc
        self.uri = uri
        self.info: dict[str, Any] = dict(info)
        self.feature_spec = feature_spec
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop_server, proc, workdir)

    @classmethod
    def start(cls, model_dir: Path, workdir: Path | None, *, uri: str, info: dict[str, Any], feature_spec: FeatureSpec,
              timeout_s: float = LOAD_TIMEOUT_S) -> "PyfuncModel":
        """Start the model server on the MLflow model directory ``model_dir`` (``workdir``, removed on
        :meth:`close`, holds it and the server's stderr log) and wait up to ``timeout_s`` seconds for
        it to load the model and check it on probe rows. Raises :class:`ModelLoadError` with the
        server's reason if it cannot."""
        logdir = workdir if workdir is not None else Path(model_dir)
        errlog = logdir / "model-server.log"
        cmd = server_command(model_dir, feature_spec)
        if not make_undumpable():
            log.warning("prctl(PR_SET_DUMPABLE) unavailable: the model server process could read the trader's "
                        "/proc/<pid>/environ (its credentials)")
        try:
            with open(errlog, "wb") as err:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                        env=server_env(), text=True, encoding="utf-8", bufsize=1)
        except OSError as exc:
            raise ModelLoadError(f"cannot start the model server process {cmd[0]!r}: {exc}") from exc
        self = cls(proc, workdir, uri, info, feature_spec)
        try:
            ready = self._read(timeout_s)
        except ModelServingError as exc:
            self.close()
            tail = _tail(errlog.read_text(errors="replace") if errlog.exists() else "", 1500)
            raise ModelLoadError(f"{uri}: the model server process did not start: {exc}; {tail or 'no output'}") from None
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            self.close()
            why = ready.get("error") if isinstance(ready, dict) else None
            raise ModelLoadError(str(why) if isinstance(why, str) else f"{uri}: the model server answered {ready!r:.300}")
        self.info.update(ready.get("info") or {})
        self.info["serving"] = f"model server process (pid {proc.pid}): {self.info.get('server', 'pyfunc')}"
        return self

    def _read(self, timeout_s: float) -> Any:
        import select

        out = self._proc.stdout
        if out is None:
            raise ModelServingError("no pipe to the model server")
        r, _, _ = select.select([out], [], [], timeout_s)
        if not r:
            raise ModelServingError(f"no answer within {timeout_s:g} s")
        line = out.readline()
        if not line:
            rc = self._proc.poll()
            raise ModelServingError(f"the model server process exited (code {rc})")
        try:
            return json.loads(line)
        except ValueError as exc:
            raise ModelServingError(f"unreadable answer from the model server: {line[:200]!r}") from exc

    def _ask(self, X: np.ndarray, each: bool) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.feature_spec.n_features:
            raise ValueError(f"expected rows of {self.feature_spec.n_features} features, got shape {X.shape}")
        with self._lock:
            if not self._finalizer.alive:
                raise ModelServingError(f"{self.uri}: the model server was closed")
            try:
                self._proc.stdin.write(json.dumps({"X": X.tolist(), "each": each}) + "\n")  # type: ignore[union-attr]
                self._proc.stdin.flush()  # type: ignore[union-attr]
            except (OSError, ValueError) as exc:
                raise ModelServingError(f"{self.uri}: cannot reach the model server: {exc}") from exc
            ans = self._read(self.timeout_s)
        if isinstance(ans, dict) and isinstance(ans.get("error"), str):
            raise ModelServingError(f"{self.uri}: {ans['error']}")
        p = np.asarray(ans.get("p") if isinstance(ans, dict) else None, dtype=np.float64)
        if p.shape != (len(X),) or not (np.isfinite(p) & (p >= 0) & (p <= 1)).all():
            raise ModelServingError(f"{self.uri}: the model server answered {ans!r:.200} for {len(X)} rows")
        return p

    def p_up(self, X: np.ndarray) -> np.ndarray:
        """P(up) for rows: X shape (n, n_features) float64 -> shape (n,) in [0, 1] (one model call)."""
        return self._ask(X, each=False)

    def p_up_rows(self, X: np.ndarray) -> np.ndarray:
        """:meth:`p_up_one` of every row (the model called one row at a time, as the engine does), shape (n,)."""
        return self._ask(X, each=True)

    def p_up_one(self, x: np.ndarray) -> float:
        """P(up) for one feature row, shape (n_features,)."""
        return float(self._ask(np.asarray(x, dtype=np.float64).reshape(1, -1), each=False)[0])

    def close(self) -> None:
        """Stop the model server process and remove the model's files (idempotent)."""
        self._finalizer()

    def __repr__(self) -> str:
        return f"PyfuncModel(uri={self.uri!r}, pid={self._proc.pid})"


def loader_command(uri: str, tracking_uri: str, out_dir: str | Path) -> list[str]:
    """The command line of the model loader process (:mod:`.modelfetch`).

    ``-P`` (Python 3.11's safe path): ``python -m`` would otherwise put the current directory
    first on ``sys.path``, and a folder there named like a module shadows it; the source tree's
    ``operator/`` shadowed the standard library's ``operator`` (the image once ran from /app,
    which held the sources) and the child crashed at its first import. The child keeps the
    trader's cwd: relative tracking URIs (``sqlite:///mlflow.db``) and MLflow's ``./mlruns``
    defaults resolve against it.
    """
    return [sys.executable, "-P", "-m", "quantramp.trader.modelfetch", uri, tracking_uri, str(out_dir)]


def _run_loader(uri: str, tracking_uri: str, out: Path, timeout_s: float) -> dict[str, Any]:
    """Run the loader process with ``out`` as its download directory; return its result or raise ModelLoadError."""
    cmd = loader_command(uri, tracking_uri, out)
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=timeout_s
        )
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(
            f"loading {uri} from {tracking_uri} took more than {timeout_s:g} s; the loader process was killed"
        ) from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot start the model loader process {cmd[0]!r}: {exc}") from exc
    res: Any = None
    try:
        res = json.loads((out / RESULT_FILE).read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model loader process for {uri} wrote an unreadable result: {exc}") from exc
    if isinstance(res, dict) and res.get("ok") is False and isinstance(res.get("error"), str):
        raise ModelLoadError(res["error"])
    if proc.returncode != 0:
        rc = proc.returncode
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        raise ModelLoadError(f"model loader process for {uri} {how}: {_tail(proc.stderr) or 'no output'}")
    if not isinstance(res, dict) or res.get("ok") is not True:
        raise ModelLoadError(f"model loader process for {uri} exited without a result: {_tail(proc.stderr) or 'no output'}")
    if proc.stderr.strip():
        log.debug("model loader process for %s: %s", uri, _tail(proc.stderr))
    return res


def _tail(text: str, limit: int = 2000) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _registry_info(uri: str) -> dict[str, Any]:
    """Name, version and tags of a ``models:/`` URI (best effort, empty on failure)."""
    from mlflow import MlflowClient

    if not uri.startswith("models:/"):
        return {}
    ref = uri[len("models:/") :]
    client = MlflowClient()
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, version = ref.rsplit("/", 1)
            mv = client.get_model_version(name, version)
    except Exception:  # noqa: BLE001 - informational only
        return {}
    return {"name": mv.name, "version": str(mv.version), "tags": dict(mv.tags or {})}
