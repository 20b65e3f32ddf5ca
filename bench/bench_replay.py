"""Replay throughput: our engine against backtesting.py on the same bars and rule (issue #3: ratio >= 5x).

Bars: the 2,340 real AAPL minute bars, looped ``LOOPS`` times (timestamps shifted
by whole weeks, as :func:`~quantramp.trader.marketdata.replay` does). Input is
prepared outside the timing for both: our :class:`~quantramp.trader.marketdata.Bar`
objects, backtesting.py's DataFrame.

Rule (both): long when P(up) > 0.5 + t, short when P(up) < 0.5 - t, otherwise
keep the position; flat from 5 minutes before the close (the engine's
end-of-day rule); orders fill at the next bar's open; t = the engine's default
entry threshold.

- ours: :func:`quantramp.trader.replay.run`, the batch replay of the engine with
  the MLflow-loaded model (features and P(up) for the whole series, quiet bars
  applied in runs, every order, fill and state change through ``Engine.step``:
  governor, ATR sizing, SimBroker fills, simulated book, calendar). Its results
  equal the per-bar loop's (tested; the trade counts are checked here too).
- ours, per bar: :meth:`Engine.on_bar` per bar, the live path (features and
  P(up) computed on every bar).
- ours, P(up) looked up: the per-bar loop with the model replaced by a lookup of
  the precomputed probabilities (features are still computed by the engine).
- backtesting.py: ``Backtest.run`` of a Strategy reading precomputed P(up) and
  end-of-day columns (P(up) from the same model on the engine's own feature
  rows over the same looped bars), size = 50% of equity.

Reported: bars per second of each (wall time of the whole run, including each
library's own per-run setup and final statistics), and ours / backtesting.py.

Usage: ``python bench/bench_replay.py TRACKING_URI MODEL_URI [LOOPS]``; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from datetime import timedelta

import numpy as np
import pandas as pd

from quantramp.trader import replay as batch
from quantramp.trader import session as sess
from quantramp.trader.backtest import make_engine
from quantramp.trader.engine import DEFAULT_ENTRY_THRESHOLD, EngineConfig
from quantramp.trader.features import FeatureStream
from quantramp.trader.marketdata import load_minute_bars, loop_offset, replay
from quantramp.trader.model import load_model

CAPITAL_USD = 10_000.0
LOOPS = 5
BEST_OF = 3


class _Lookup:
    """A ProbabilityModel returning precomputed P(up) in bar order (ignores the features)."""

    def __init__(self, p: list[float]) -> None:
        self._p = p
        self._i = 0

    def p_up_one(self, x) -> float:
        p = self._p[self._i]
        self._i += 1
        return p


def _run_per_bar(model, bars, bar_list) -> tuple[float, int]:
    eng = make_engine(model, EngineConfig.for_capital(CAPITAL_USD), bars, seed=0)
    on_bar = eng.on_bar
    t0 = time.perf_counter()
    for bar in bar_list:
        on_bar(bar)
    return time.perf_counter() - t0, eng.stats().trades


def _run_ours(model, bars, loops) -> tuple[float, int]:
    eng = make_engine(model, EngineConfig.for_capital(CAPITAL_USD), bars, seed=0)
    t0 = time.perf_counter()
    batch.run(eng, bars, len(bars) * loops)
    return time.perf_counter() - t0, eng.stats().trades


def _frame(bars, p_up: np.ndarray, loops: int) -> pd.DataFrame:
    """OHLCV + P (P(up), NaN in warm-up) + F (1.0 = must be flat for a fill at the next open), looped."""
    df = bars.to_frame().rename(columns=str.capitalize)
    clock = sess.SessionClock()
    fill = [t.to_pydatetime() + timedelta(minutes=1) for t in df.index]
    flat = np.array([clock.phase(f) <= 0 for f in fill], dtype=float)
    off = pd.Timedelta(loop_offset(bars))
    frames = []
    for k in range(loops):
        f = df.copy()
        f.index = f.index + off * k
        f["P"] = p_up[k * len(bars) : (k + 1) * len(bars)]
        f["F"] = flat  # shifted loops keep weekdays; holidays of shifted dates are ignored here
        frames.append(f)
    return pd.concat(frames)


def _run_backtesting_py(df: pd.DataFrame, threshold: float) -> tuple[float, int]:
    from backtesting import Backtest, Strategy

    hi, lo = 0.5 + threshold, 0.5 - threshold

    class ProbabilityRule(Strategy):
        def init(self):
            pass

        def next(self):
            d = self.data
            pos = self.position
            if d.F[-1]:
                if pos:
                    pos.close()
                return
            p = d.P[-1]
            if p > hi:
                if not pos.is_long:
                    self.buy(size=0.5)
            elif p < lo:
                if not pos.is_short:
                    self.sell(size=0.5)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(df, ProbabilityRule, cash=CAPITAL_USD, commission=0.0, exclusive_orders=True, finalize_trades=True)
        t0 = time.perf_counter()
        stats = bt.run()
        dt = time.perf_counter() - t0
    return dt, int(stats["# Trades"])


def main(tracking_uri: str, model_uri: str, loops: int = LOOPS) -> dict:
    import backtesting

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(model_uri, tracking_uri)
    bars = load_minute_bars()
    n = len(bars) * loops
    bar_list = list(replay(bars, 0.0, loops=loops))
    # P(up) exactly as the engine sees it over the looped replay (one feature stream across loops)
    fs = FeatureStream()
    p_up = np.full(n, np.nan)
    for i, b in enumerate(bar_list):
        x = fs.update(b.high, b.low, b.close, b.volume)
        if x is not None:
            p_up[i] = model.p_up_one(x)
    looked_up = p_up[np.isfinite(p_up)].tolist()
    df = _frame(bars, p_up, loops)
    thr = DEFAULT_ENTRY_THRESHOLD

    ours = min(_run_ours(model, bars, loops) for _ in range(BEST_OF))
    per_bar = min(_run_per_bar(model, bars, bar_list) for _ in range(BEST_OF))
    lookup = min(_run_per_bar(_Lookup(looked_up), bars, bar_list) for _ in range(BEST_OF))
    theirs = min(_run_backtesting_py(df, thr) for _ in range(BEST_OF))
    if ours[1] != per_bar[1]:
        raise SystemExit(f"batch replay made {ours[1]} trades, the per-bar loop {per_bar[1]}")
    ours_bps, lookup_bps, theirs_bps = n / ours[0], n / lookup[0], n / theirs[0]
    return {
        "benchmark": "replay_throughput",
        "bars": n,
        "loops": loops,
        "best_of": BEST_OF,
        "entry_threshold": thr,
        "ours_bars_per_s": round(ours_bps),
        "ours_trades": ours[1],
        "ours_per_bar_bars_per_s": round(n / per_bar[0]),
        "ours_lookup_bars_per_s": round(lookup_bps),
        "backtesting_py_bars_per_s": round(theirs_bps),
        "backtesting_py_trades": theirs[1],
        "backtesting_py_version": backtesting.__version__,
        "ratio": round(ours_bps / theirs_bps, 3),
        "ratio_per_bar": round(n / per_bar[0] / theirs_bps, 3),
        "ratio_lookup": round(lookup_bps / theirs_bps, 3),
        "target_ratio": 5.0,
    }


if __name__ == "__main__":
    loops = int(sys.argv[3]) if len(sys.argv) > 3 else LOOPS
    print(json.dumps(main(sys.argv[1], sys.argv[2], loops)))
