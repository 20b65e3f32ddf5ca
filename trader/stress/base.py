"""Stress certification: constants, thresholds, the report pieces, the model, the engine runs and the context.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from .. import governor as gov
from ..backtest import make_engine
from ..broker import SimBroker
from ..engine import Engine, EngineConfig, StepResult
from ..marketdata import Bar, Bars, new_york_time
from ..model import LogisticModel, _LogisticRow
from .auditor import Auditor

if TYPE_CHECKING:
    from .local_redis import LocalRedis


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
    from ..train import fit, training_data

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
