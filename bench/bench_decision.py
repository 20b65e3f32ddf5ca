"""Full-decision latency with the model loaded from MLflow (issue #3, "Speed": p99 <= 250 us, max <= 10 ms).

The model is loaded as the trader pod loads it (:func:`~quantramp.trader.model.load_model`:
the logistic model served with numpy only). One decision is :meth:`quantramp.trader.engine.Engine.on_bar` on one bar: fill of
the previous order (SimBroker) and of the simulated book, scoring, marking,
governor mark, session/end-of-day rule, ATR sizing, features (FeatureStream),
model (P(up)), signal, governor check and the next order. Each call is timed
with ``time.perf_counter_ns``. Bars: the 2,340 real minute bars
(:func:`~quantramp.trader.marketdata.replay`, each Bar built before its timed
call), one pass per fresh engine (new seed, new drawdown peak) until N decisions;
the warm-up bars of each pass (no feature row yet, no model call) are excluded.
The garbage collector stays on, as in the trader.

Also times the parts on the same bars: FeatureStream.update, the model's
one-row fast path, scikit-learn ``predict_proba`` on one row (the general path)
and, for scale, MLflow's pyfunc ``predict`` on a one-row DataFrame.

Usage: ``python bench/bench_decision.py TRACKING_URI MODEL_URI [N]``; prints one JSON line.
"""

from __future__ import annotations

import gc
import json
import math
import sys
import time
import warnings

import numpy as np

from quantramp.trader.backtest import make_engine
from quantramp.trader.engine import EngineConfig
from quantramp.trader.features import LOOKBACK, FeatureStream
from quantramp.trader.marketdata import load_minute_bars, replay
from quantramp.trader.model import load_model, load_model_in_process

CAPITAL_USD = 10_000.0


def pct(ns: np.ndarray) -> dict:
    """p50 / p99 / p99.9 / max / mean of nanosecond timings, in microseconds."""
    us = np.asarray(ns, dtype=np.float64) / 1_000.0
    return {
        "n": int(us.size),
        "p50_us": round(float(np.percentile(us, 50)), 3),
        "p99_us": round(float(np.percentile(us, 99)), 3),
        "p99_9_us": round(float(np.percentile(us, 99.9)), 3),
        "max_us": round(float(us.max()), 3),
        "mean_us": round(float(us.mean()), 3),
    }


def time_decisions(model, n: int) -> dict:
    bars = load_minute_bars()
    per_loop = len(bars) - (LOOKBACK - 1)
    loops = math.ceil(n / per_loop)
    config = EngineConfig.for_capital(CAPITAL_USD)
    pc = time.perf_counter_ns
    out = np.empty(loops * len(bars), dtype=np.int64)
    full = np.zeros(loops * len(bars), dtype=bool)
    orders = trades = 0
    denials: dict[str, int] = {}
    gc.collect()
    i = 0
    # a fresh engine (a new trading day for the governor's drawdown, a new seed) per pass over the
    # 2,340 bars, so the mix of orders, fills and denials stays that of one replay
    for loop in range(loops):
        eng = make_engine(model, config, bars, seed=loop)
        for bar in replay(bars, 0.0, loops=1):
            t0 = pc()
            r = eng.on_bar(bar)
            t1 = pc()
            out[i] = t1 - t0
            full[i] = r.p_up is not None
            orders += r.order_qty != 0
            i += 1
        s = eng.stats()
        trades += s.trades
        for k, v in s.governor_denials.items():
            denials[k] = denials.get(k, 0) + v
    res = pct(out[full])
    res.update(
        bars=int(out.size),
        engines=loops,
        warm_up_bars_excluded=int((~full).sum()),
        orders=int(orders),
        trades=trades,
        governor_denials=denials,
        gc_enabled=gc.isenabled(),
    )
    return res


def time_parts(
    model, ref, n_rows: int = 20_000, n_slow: int = 2_000, n_pyfunc: int = 200, model_uri: str = ""
) -> dict:
    """``model``: as the trader serves it (:func:`load_model`); ``ref``: the same model with its
    scikit-learn estimator (:func:`load_model_in_process`), for ``predict_proba``."""
    bars = load_minute_bars()
    h, lo, c, v = bars.high.tolist(), bars.low.tolist(), bars.close.tolist(), bars.volume.tolist()
    pc = time.perf_counter_ns
    fs = FeatureStream()
    feat_ns, rows = [], []
    while len(rows) < n_rows:
        for i in range(len(c)):
            t0 = pc()
            x = fs.update(h[i], lo[i], c[i], v[i])
            t1 = pc()
            if x is not None:
                feat_ns.append(t1 - t0)
                rows.append(x)
    rows = rows[:n_rows]
    fast_ns = np.empty(len(rows), dtype=np.int64)
    p_fast = np.empty(len(rows))
    for i, x in enumerate(rows):
        t0 = pc()
        p_fast[i] = model.p_up_one(x)
        fast_ns[i] = pc() - t0
    est, up = ref.estimator, ref._up
    slow_ns = np.empty(n_slow, dtype=np.int64)
    p_slow = np.empty(n_slow)
    for i in range(n_slow):
        x = np.asarray(rows[i], dtype=float).reshape(1, -1)
        t0 = pc()
        p_slow[i] = est.predict_proba(x)[0, up]
        slow_ns[i] = pc() - t0
    out = {
        "features": pct(feat_ns[:n_rows]),
        "model_fast_path": pct(fast_ns) | {"enabled": model.fast_path, "model": type(model).__name__},
        "model_sklearn_predict_proba": pct(slow_ns),
        "fast_vs_predict_proba_max_abs_diff": float(np.abs(p_fast[:n_slow] - p_slow).max()),
        "fast_vs_predict_proba_identical": bool((p_fast[:n_slow] == p_slow).all()),
    }
    try:  # the pyfunc pandas path, for scale only
        import mlflow.pyfunc
        import pandas as pd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pf = mlflow.pyfunc.load_model(model_uri)
            py_ns = np.empty(n_pyfunc, dtype=np.int64)
            for i in range(n_pyfunc):
                df = pd.DataFrame(np.asarray(rows[i]).reshape(1, -1))
                t0 = pc()
                pf.predict(df)
                py_ns[i] = pc() - t0
        out["model_mlflow_pyfunc_pandas"] = pct(py_ns)
    except Exception as exc:  # noqa: BLE001 - informational only
        out["model_mlflow_pyfunc_pandas"] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return out


def main(tracking_uri: str, model_uri: str, n: int = 100_000) -> dict:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(model_uri, tracking_uri)
    load_s = time.perf_counter() - t0
    res = {"benchmark": "full_decision", "model_uri": model_uri, "model_load_s": round(load_s, 2)}
    res.update(time_decisions(model, n))
    res["target_p99_us"] = 250.0
    res["target_max_us"] = 10_000.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = load_model_in_process(model_uri, tracking_uri)  # sets MLflow's tracking URI for the pyfunc part
    res["parts"] = time_parts(model, ref, model_uri=model_uri)
    return res


if __name__ == "__main__":
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    print(json.dumps(main(sys.argv[1], sys.argv[2], n)))
