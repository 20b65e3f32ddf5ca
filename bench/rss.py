"""Trader memory with its model loaded (issue #3: RSS <= 250 MB). Run in a fresh interpreter.

Follows the trader pod's path (:func:`quantramp.trader.server.run`): imports the
server module (everything the trader pod imports), loads the minute bars and
the model with the server's own ``load_model``
(:func:`quantramp.trader.model.load_model`: MLflow, skops and scikit-learn run
in a short-lived child process; the logistic model is served with numpy only),
builds the engine and runs it over the 2,340 real minute bars, then reports
resident memory from ``/proc/self/status`` (VmRSS now, i.e. after the bars, VmHWM peak) and
``resource.getrusage`` (ru_maxrss), in MB (10^6 bytes). The loader process's
peak (``loader_peak_rss_mb``, ``RUSAGE_CHILDREN``) is reported apart: it has
exited before the trader trades, but while it runs the pod's memory cgroup holds
both (``pod_load_peak_upper_bound_mb``: the trader's RSS before the load plus the
loader's peak; the pod's memory limit must stay above it).

Usage: ``python bench/rss.py TRACKING_URI MODEL_URI``; prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb * 1024 / 1e6, 1)


def main(tracking_uri: str, model_uri: str) -> dict:
    before = _status_kb("VmRSS")
    from quantramp.trader import server  # the trader's imports
    from quantramp.trader.backtest import make_engine
    from quantramp.trader.engine import EngineConfig
    from quantramp.trader.marketdata import load_minute_bars, replay

    imported = _status_kb("VmRSS")
    bars = load_minute_bars()  # before the model, as server.run does
    before_load = _status_kb("VmRSS")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = server.load_model(model_uri, tracking_uri)
    load_s = time.perf_counter() - t0
    loaded = _status_kb("VmRSS")
    eng = make_engine(model, EngineConfig.for_capital(10_000.0), bars)
    for bar in replay(bars, 0.0, loops=1):
        eng.on_bar(bar)
    loader_peak = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6, 1)
    heavy = sorted(m for m in ("mlflow", "skops", "sklearn", "scipy", "sqlalchemy") if m in sys.modules)
    return {
        "benchmark": "trader_rss",
        "rss_mb": _mb(_status_kb("VmRSS")),
        "peak_rss_mb": _mb(_status_kb("VmHWM")),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6, 1),
        "rss_interpreter_mb": _mb(before),
        "rss_after_imports_mb": _mb(imported),
        "rss_before_model_load_mb": _mb(before_load),  # imports + minute bars
        "rss_after_model_load_mb": _mb(loaded),
        "bars_run": eng.bars,
        "model_serving": getattr(model, "info", {}).get("serving", type(model).__name__),
        "model_load_s": round(load_s, 2),
        "loader_peak_rss_mb": loader_peak,
        # the pod's cgroup holds both processes while the loader runs (shared pages counted twice here)
        "pod_load_peak_upper_bound_mb": round(_mb(before_load) + loader_peak, 1),
        "heavy_modules_in_trader": heavy,
        "target_mb": 250.0,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
