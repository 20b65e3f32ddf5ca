"""Trader memory with its model loaded (issue #3: RSS <= 250 MB). Run in a fresh interpreter.

Imports the trader's server module (everything the trader pod imports), loads
the model from MLflow with :func:`quantramp.trader.model.load_model`, builds
the engine and runs it over the 2,340 real minute bars, then reports resident
memory from ``/proc/self/status`` (VmRSS now, VmHWM peak) and
``resource.getrusage`` (ru_maxrss), in MB (10^6 bytes).

Usage: ``python bench/rss.py TRACKING_URI MODEL_URI``; prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
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
    import quantramp.trader.server  # noqa: F401 - the trader's imports
    from quantramp.trader.backtest import make_engine
    from quantramp.trader.engine import EngineConfig
    from quantramp.trader.marketdata import load_minute_bars, replay
    from quantramp.trader.model import load_model

    imported = _status_kb("VmRSS")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(model_uri, tracking_uri)
    loaded = _status_kb("VmRSS")
    bars = load_minute_bars()
    eng = make_engine(model, EngineConfig.for_capital(10_000.0), bars)
    for bar in replay(bars, 0.0, loops=1):
        eng.on_bar(bar)
    return {
        "benchmark": "trader_rss",
        "rss_mb": _mb(_status_kb("VmRSS")),
        "peak_rss_mb": _mb(_status_kb("VmHWM")),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6, 1),
        "rss_interpreter_mb": _mb(before),
        "rss_after_imports_mb": _mb(imported),
        "rss_after_model_load_mb": _mb(loaded),
        "bars_run": eng.bars,
        "target_mb": 250.0,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
