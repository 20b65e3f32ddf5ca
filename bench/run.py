"""``make bench``: the issue #3 speed figures, a table, then one JSON line (the last line of output).

1. governor check, >= 1,000,000 decisions (:mod:`bench_governor`), target p99 <= 10 us;
2. full decision (Engine.on_bar: features + model + governor + order), >= 100,000
   decisions, model trained and registered with quantramp.trader.train in a
   throwaway sqlite MLflow store and loaded with quantramp.trader.model.load_model
   (:mod:`bench_decision`), targets p99 <= 250 us, max <= 10 ms;
3. replay bars per second against backtesting.py on the same bars and rule
   (:mod:`bench_replay`), target ratio >= 5;
4. trader RSS with its model loaded, fresh interpreter (:mod:`rss`), target <= 250 MB.

Each benchmark runs in its own interpreter, one after the other (no two at once).
Timings are wall-clock on a shared machine: the load average is reported with them.
Usage: ``python bench/run.py [--quick]`` (--quick: 10x fewer decisions, for a smoke run).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOVERNOR_N = 1_000_000
DECISION_N = 100_000


def _run(script: str, *args: str) -> dict:
    """Run ``bench/<script>`` in a fresh interpreter; return the JSON document on its last stdout line."""
    print(f"bench: {script} {' '.join(args)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args], capture_output=True, text=True, cwd=HERE.parent,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"bench: {script} failed (exit {proc.returncode})")
    out = json.loads(lines[-1])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def _pick(d: dict) -> dict:
    return {k: d[k] for k in ("n", "p50_us", "p99_us", "p99_9_us", "max_us", "mean_us") if k in d}


def collect(quick: bool = False) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="quantramp-bench-") as tmp:
        store = _run("store.py", tmp)
        uri, model = store["tracking_uri"], store["model_uri"]
        gov = _run("bench_governor.py", str(GOVERNOR_N // (10 if quick else 1)))
        dec = _run("bench_decision.py", uri, model, str(DECISION_N // (10 if quick else 1)))
        rep = _run("bench_replay.py", uri, model, "2" if quick else "5")
        rss = _run("rss.py", uri, model)

    parts = dec["parts"]
    gov_fig = _pick(gov) | {"target_p99_us": 10.0, "met": gov["p99_us"] <= 10.0}
    dec_fig = _pick(dec) | {
        "target_p99_us": 250.0,
        "target_max_us": 10_000.0,
        "met": dec["p99_us"] <= 250.0 and dec["max_us"] <= 10_000.0,
        "model_uri": model,
        "model_fast_path": parts["model_fast_path"].get("enabled"),
        "orders": dec["orders"],
        "trades": dec["trades"],
        "gc_enabled": dec["gc_enabled"],
    }
    rep_fig = {k: rep[k] for k in (
        "bars", "loops", "ours_bars_per_s", "ours_per_bar_bars_per_s", "ours_lookup_bars_per_s", "backtesting_py_bars_per_s",
        "ratio", "ratio_per_bar", "ratio_lookup", "ours_trades", "backtesting_py_trades", "backtesting_py_version",
    )} | {"target_ratio": 5.0, "met": rep["ratio"] >= 5.0}
    rss_fig = {k: rss[k] for k in ("rss_mb", "peak_rss_mb", "rss_after_imports_mb", "rss_after_model_load_mb")} | {
        "target_mb": 250.0, "met": rss["rss_mb"] <= 250.0,
    }
    return {
        "governor_check": gov_fig,
        "full_decision": dec_fig,
        "decision_parts": {
            "features": _pick(parts["features"]),
            "model_fast_path": _pick(parts["model_fast_path"]),
            "model_sklearn_predict_proba": _pick(parts["model_sklearn_predict_proba"]),
            "model_mlflow_pyfunc_pandas": _pick(parts["model_mlflow_pyfunc_pandas"]) or parts["model_mlflow_pyfunc_pandas"],
            "fast_vs_predict_proba_max_abs_diff": parts["fast_vs_predict_proba_max_abs_diff"],
        },
        "replay": rep_fig,
        "trader_rss": rss_fig,
        "targets_met": {
            "governor_p99": gov_fig["met"],
            "decision_p99_and_max": dec_fig["met"],
            "replay_ratio": rep_fig["met"],
            "rss": rss_fig["met"],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "quick": quick,
        },
    }


def _ok(met: bool) -> str:
    return "[green]met[/]" if met else "[red]MISSED[/]"


def table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=130)
    t = Table(title="Latency (microseconds)")
    for col in ("benchmark", "n", "p50", "p99", "p99.9", "max", "target", ""):
        t.add_column(col, justify="left" if col in ("benchmark", "target") else "right")

    def row(name, d, target="", met=None):
        if "p50_us" not in d:
            t.add_row(name, "", "", "", "", "", str(d.get("error", "n/a")), "")
            return
        t.add_row(
            name, f"{d['n']:,}", f"{d['p50_us']:.1f}", f"{d['p99_us']:.1f}", f"{d['p99_9_us']:.1f}", f"{d['max_us']:.1f}",
            target, "" if met is None else _ok(met),
        )

    g, d, p = res["governor_check"], res["full_decision"], res["decision_parts"]
    row("governor check", g, "p99 <= 10", g["met"])
    row("full decision (Engine.on_bar)", d, "p99 <= 250, max <= 10,000", d["met"])
    row("  features (FeatureStream)", p["features"])
    row("  model, fast path", p["model_fast_path"], f"max |diff| vs predict_proba {p['fast_vs_predict_proba_max_abs_diff']:.1e}")
    row("  model, sklearn predict_proba", p["model_sklearn_predict_proba"], "general path, one row")
    row("  model, MLflow pyfunc (pandas)", p["model_mlflow_pyfunc_pandas"], "for scale")
    con.print(t)

    r, m = res["replay"], res["trader_rss"]
    t2 = Table(title="Replay throughput and memory")
    for col in ("figure", "value", "target", ""):
        t2.add_column(col, justify="right" if col == "value" else "left")
    t2.add_row("ours, bars/s (batch replay)", f"{r['ours_bars_per_s']:,}", "", "")
    t2.add_row("ours, bars/s (on_bar per bar: features + model every bar)", f"{r['ours_per_bar_bars_per_s']:,}", "", "")
    t2.add_row("ours, bars/s (on_bar per bar, P(up) looked up)", f"{r['ours_lookup_bars_per_s']:,}", "", "")
    t2.add_row(f"backtesting.py {r['backtesting_py_version']}, bars/s", f"{r['backtesting_py_bars_per_s']:,}", "", "")
    t2.add_row(f"ratio ours / backtesting.py ({r['bars']:,} bars)", f"{r['ratio']:.2f}x", ">= 5x", _ok(r["met"]))
    t2.add_row("ratio, on_bar per bar", f"{r['ratio_per_bar']:.2f}x", "", "")
    t2.add_row("ratio, on_bar per bar, P(up) looked up", f"{r['ratio_lookup']:.2f}x", "", "")
    t2.add_row("trader RSS, model loaded (MB)", f"{m['rss_mb']:.1f}", "<= 250", _ok(m["met"]))
    t2.add_row("  after imports / after model load (MB)", f"{m['rss_after_imports_mb']:.1f} / {m['rss_after_model_load_mb']:.1f}", "", "")
    con.print(t2)
    mc = res["machine"]
    con.print(f"{mc['cpus']} CPUs, load average {mc['loadavg_before'][0]} before / {mc['loadavg_after'][0]} after, Python {mc['python']}")


def main() -> None:
    res = collect(quick="--quick" in sys.argv[1:])
    table(res)
    sys.stdout.flush()
    print(json.dumps(res, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
