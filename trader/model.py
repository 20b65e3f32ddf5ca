"""Load a registered model from MLflow and predict P(next bar closes up).

The model is loaded with the scikit-learn flavour (not pyfunc), so serving is
a plain ``predict_proba`` on a float64 numpy row. For the logistic model that
``quantramp-trader train`` registers (StandardScaler -> binary
LogisticRegression, or a bare binary LogisticRegression) one-row serving skips
scikit-learn's per-call validation (hundreds of microseconds) and evaluates the
fitted parameters directly (:class:`_LogisticRow`), with the same arithmetic;
every other estimator goes through ``predict_proba``. Only models saved in the
skops format are accepted, and they are loaded with *our* allow-list of types
(:data:`TRUSTED_TYPES`), not the one written into the model by whoever logged
it. Pickle and cloudpickle models are refused: they execute code on load, and
MLflow 3.17 loads them by default (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION``
defaults to true).

Any failure (MLflow unreachable, unknown model, wrong feature set) raises
:class:`ModelLoadError`: the trader refuses to start rather than guess.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .features import FEATURE_NAMES, N_FEATURES

#: types beyond skops' defaults that a quantramp model may contain
TRUSTED_TYPES: tuple[str, ...] = ("sklearn.tree._tree.Tree",)
#: seconds to wait for the MLflow server's health endpoint
HEALTH_TIMEOUT_S = 5.0


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the trader must not trade."""


@dataclass
class DirectionModel:
    """A fitted binary classifier whose class 1 means "next bar closes up".

    estimator: a scikit-learn classifier with ``predict_proba`` taking float64
    arrays of shape (n, N_FEATURES). uri: where it came from. info: MLflow
    details (name, version, tags) when loaded from the registry.
    """

    estimator: Any
    uri: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not hasattr(self.estimator, "predict_proba"):
            raise ModelLoadError(f"model {self.uri!r} has no predict_proba")
        classes = list(getattr(self.estimator, "classes_", []))
        if len(classes) != 2 or 1 not in [int(c) for c in classes]:
            raise ModelLoadError(f"model {self.uri!r} must be a binary classifier with class 1, got {classes}")
        self._up = [int(c) for c in classes].index(1)
        n_in = getattr(self.estimator, "n_features_in_", N_FEATURES)
        if n_in != N_FEATURES:
            raise ModelLoadError(f"model {self.uri!r} expects {n_in} features, the trader computes {N_FEATURES}")
        self._fast = _LogisticRow.of(self.estimator, self._up)

    @property
    def fast_path(self) -> bool:
        """True if :meth:`p_up_one` evaluates the fitted logistic parameters directly."""
        return self._fast is not None

    def p_up(self, X: np.ndarray) -> np.ndarray:
        """P(up) for rows of features: X shape (n, N_FEATURES) float64 -> shape (n,) in [0, 1]."""
        return self.estimator.predict_proba(np.asarray(X, dtype=float))[:, self._up]

    def p_up_one(self, x: np.ndarray) -> float:
        """P(up) for one feature row, shape (N_FEATURES,)."""
        fast = self._fast
        if fast is not None:
            p = fast(x)
            if p is not None:
                return p
        return float(self.p_up(np.asarray(x, dtype=float).reshape(1, -1))[0])


class _LogisticRow:
    """P(class ``up``) of one row for a fitted binary logistic model, without scikit-learn's per-call checks.

    Accepts exactly ``LogisticRegression`` or ``Pipeline([StandardScaler, LogisticRegression])``
    (the classes themselves, not subclasses). Computes what ``predict_proba`` computes
    for a (1, n) float64 row, in the same order: ``z_i = (x_i - mean_i) / scale_i``,
    ``d = sum_i z_i * coef_i + intercept``, ``p = scipy.special.expit(d)`` (``1 - p``
    when class 1 is column 0). Returns ``None`` (caller falls back to ``predict_proba``,
    which raises or handles it as before) for a row of the wrong length or a
    non-finite decision value (a NaN or infinite feature, or overflow).
    """

    __slots__ = ("mean", "scale", "coef", "intercept", "up_is_first", "n", "_expit")

    def __init__(self, mean, scale, coef, intercept: float, up_is_first: bool) -> None:
        from scipy.special import expit

        self.mean: tuple[float, ...] | None = mean
        self.scale: tuple[float, ...] | None = scale
        self.coef: tuple[float, ...] = coef
        self.intercept = intercept
        self.up_is_first = up_is_first
        self.n = len(coef)
        self._expit = expit

    @classmethod
    def of(cls, est: Any, up: int) -> "_LogisticRow | None":
        """The fast evaluator for ``est`` if it is a supported fitted logistic model, else None."""
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
            if sc.with_mean:
                if getattr(sc, "mean_", None) is None:
                    return None
                mean = tuple(float(v) for v in np.asarray(sc.mean_, dtype=np.float64).ravel())
            if sc.with_std:
                if getattr(sc, "scale_", None) is None:
                    return None
                scale = tuple(float(v) for v in np.asarray(sc.scale_, dtype=np.float64).ravel())
        if type(clf) is not LogisticRegression:
            return None
        coef = np.asarray(getattr(clf, "coef_", None))
        intercept = np.asarray(getattr(clf, "intercept_", None))
        if (
            len(getattr(clf, "classes_", ())) != 2
            or coef.dtype != np.float64
            or coef.shape != (1, N_FEATURES)
            or intercept.shape != (1,)
            or any(v is not None and len(v) != N_FEATURES for v in (mean, scale))
        ):
            return None
        return cls(mean, scale, tuple(float(v) for v in coef[0]), float(intercept[0]), up == 0)

    def __call__(self, x: Any) -> float | None:
        """P(up) for one row (N_FEATURES numbers, any shape), or None to defer to ``predict_proba``."""
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
        p = self._expit(d)
        return float(1.0 - p) if self.up_is_first else float(p)


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


def _load_sklearn_dir(local: Path, uri: str) -> tuple[Any, dict[str, Any]]:
    from mlflow.models import Model

    try:
        mlmodel = Model.load(str(local / "MLmodel"))
    except Exception as exc:  # noqa: BLE001 - surface as a load error
        raise ModelLoadError(f"{uri}: not an MLflow model ({exc})") from exc
    flavor = mlmodel.flavors.get("sklearn")
    if flavor is None:
        raise ModelLoadError(f"{uri}: no sklearn flavour (flavours: {sorted(mlmodel.flavors)})")
    fmt = flavor.get("serialization_format", "pickle")
    meta = dict(mlmodel.metadata or {})
    if fmt == "skops":
        import skops.io

        path = local / flavor["pickled_model"]
        untrusted = set(skops.io.get_untrusted_types(file=path))
        unexpected = sorted(untrusted - set(TRUSTED_TYPES))
        if unexpected:
            raise ModelLoadError(f"{uri}: refusing skops model with untrusted types {unexpected}")
        est = skops.io.load(path, trusted=sorted(untrusted))
    else:
        # pickle/cloudpickle run arbitrary code on load (and MLflow 3.17 allows it by default)
        raise ModelLoadError(
            f"{uri}: refusing a {fmt!r}-serialized model; log it with serialization_format='skops' "
            "(quantramp-trader train does)"
        )
    meta["serialization_format"] = fmt
    return est, meta


def load_local_model(path: str | Path, uri: str = "") -> DirectionModel:
    """Load an MLflow sklearn model directory already on disk (see :func:`load_model`)."""
    local = Path(path)
    est, meta = _load_sklearn_dir(local, uri or str(local))
    feats = meta.get("features")
    if feats is not None and tuple(feats) != FEATURE_NAMES:
        raise ModelLoadError(
            f"{uri or local}: trained on features {list(feats)}, the trader computes {list(FEATURE_NAMES)}"
        )
    return DirectionModel(est, uri=uri or str(local), info={"metadata": meta})


def load_model(uri: str, tracking_uri: str | None = None) -> DirectionModel:
    """Download ``uri`` (``models:/name/version`` or ``models:/name@alias``) and load it.

    ``tracking_uri`` defaults to ``MLFLOW_TRACKING_URI``. Raises
    :class:`ModelLoadError` if MLflow is unreachable, the model does not
    exist, is not an sklearn model, or was trained on other features.
    """
    import mlflow

    if not uri:
        raise ModelLoadError("no model URI given (QR_MODEL_URI)")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise ModelLoadError("MLFLOW_TRACKING_URI is not set")
    _limit_http_retries()
    check_tracking_server(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    tmp = tempfile.mkdtemp(prefix="quantramp-model-")
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
    except Exception as exc:  # noqa: BLE001 - any MLflow/HTTP error means no model
        raise ModelLoadError(f"cannot download {uri} from {tracking_uri}: {exc}") from exc
    model = load_local_model(local, uri)
    model.info.update(_registry_info(uri))
    return model


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
