"""A throwaway MLflow store for the benchmarks: sqlite tracking + local artifacts in a temp dir.

``python bench/store.py DIR`` trains the logistic model with
:func:`quantramp.trader.train.train_and_register`, registers it as
``bench-logistic`` and prints one JSON line: ``{"tracking_uri", "model_uri", "train_s"}``.
Nothing is written outside DIR (the working directory is DIR while MLflow runs).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

MODEL_NAME = "bench-logistic"
EXPERIMENT = "quantramp-bench"


def create(root: str | Path) -> dict:
    """Train + register the logistic model in a new sqlite store under ``root``; return its URIs."""
    import mlflow

    from quantramp.trader.train import train_and_register

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chdir(root)  # MLflow defaults (./mlruns, ./mlartifacts) stay inside the temp dir
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        version = train_and_register(MODEL_NAME, kind="logistic", tracking_uri=tracking_uri, experiment=EXPERIMENT)
    return {
        "tracking_uri": tracking_uri,
        "model_uri": f"models:/{MODEL_NAME}/{version}",
        "train_s": round(time.perf_counter() - t0, 2),
    }


if __name__ == "__main__":
    print(json.dumps(create(sys.argv[1])))
