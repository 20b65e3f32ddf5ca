"""The operator's own Prometheus metrics (served on ``--metrics-port``), named with unit suffixes.

Per strategy (labels ``namespace``, ``strategy``): phase and stage (``quantramp_operator_strategy_info``,
value 1), the challenger's capital fraction (0-1), the time of the last analysis round and of the
next one due (the alert QuantrampAnalysisStale), pending and failed effects, days since the last
rollback drill. Totals: analysis rounds and their duration, measurements by
criterion and result, transitions by kind, rollbacks by reason, effect failures, Prometheus
query errors. :func:`observe` updates the per-strategy series from a status; the counters are
bumped where things happen (:mod:`.handlers`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from prometheus_client import Counter, Gauge, Histogram

from .drill import days_since_drill
from .models import TradingStrategyStatus

INFO = Gauge("quantramp_operator_strategy_info", "1 for the strategy's current phase and stage",
             ["namespace", "strategy", "phase", "stage"])
CAPITAL = Gauge("quantramp_operator_challenger_capital_ratio", "Challenger's share of the strategy capital, 0-1",
                ["namespace", "strategy"])
LAST_ANALYSIS = Gauge("quantramp_operator_last_analysis_timestamp_seconds", "Unix time of the last analysis round",
                      ["namespace", "strategy"])
NEXT_ANALYSIS = Gauge("quantramp_operator_next_analysis_timestamp_seconds",
                      "Unix time the next analysis round is due (absent: the phase is not analysed)",
                      ["namespace", "strategy"])
EFFECTS = Gauge("quantramp_operator_effects", "Effects in the outbox by state", ["namespace", "strategy", "state"])
ROUNDS = Counter("quantramp_operator_analysis_rounds_total", "Analysis rounds by verdict", ["verdict"])
ROUND_SECONDS = Histogram("quantramp_operator_analysis_round_seconds", "Wall time of one strategy's tick with a round",
                          buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
MEASUREMENTS = Counter("quantramp_operator_measurements_total", "Measurements by criterion and result", ["criterion", "result"])
TRANSITIONS = Counter("quantramp_operator_transitions_total", "State-machine transitions by kind", ["kind"])
ROLLBACKS = Counter("quantramp_operator_rollbacks_total", "Rollbacks and aborts by reason", ["reason"])
EFFECT_FAILURES = Counter("quantramp_operator_effect_failures_total", "Failed effect attempts by kind", ["kind"])
QUERY_ERRORS = Counter("quantramp_operator_prometheus_query_errors_total", "Failed Prometheus queries by evidence field", ["field"])
EVIDENCE_ROUNDS = Counter("quantramp_operator_evidence_rounds_total", "Rounds of Prometheus queries (shared by all strategies)")
EVIDENCE_ROUND_SECONDS = Histogram("quantramp_operator_evidence_round_seconds", "Wall time of one round of Prometheus queries",
                                   buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
PROM_QUERIES = Counter("quantramp_operator_prometheus_queries_total", "Prometheus queries sent")
CONFLICTS = Counter("quantramp_operator_status_conflicts_total", "Status writes rejected because the object had changed")
TICK_ERRORS = Counter("quantramp_operator_tick_errors_total", "Ticks that raised (logged; the next tick runs as usual)")
KILL_LATENCY = Histogram("quantramp_operator_kill_latency_seconds", "Kill switch broadcast to the last trader acknowledgement",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
KILL_ENGAGED = Gauge("quantramp_operator_kill_switch_engaged", "1 while the strategy's kill switch is engaged",
                     ["namespace", "strategy"])

DAYS_SINCE_DRILL = Gauge("quantramp_operator_days_since_drill",
                         "Days since the last passing live rollback drill (annotation quantramp.io/last-drill; absent: never)",
                         ["namespace", "strategy"])

_phases: dict[tuple[str, str], tuple[str, str]] = {}


def observe(namespace: str, strategy: str, st: TradingStrategyStatus) -> None:
    """Set the per-strategy gauges from ``st``."""
    key = (namespace, strategy)
    now = (st.phase, st.stage or "")
    old = _phases.get(key)
    if old is not None and old != now:
        INFO.remove(namespace, strategy, *old)
    _phases[key] = now
    INFO.labels(namespace, strategy, *now).set(1)
    CAPITAL.labels(namespace, strategy).set((st.capital_percent or 0.0) / 100.0)
    if st.last_analysis is not None:
        LAST_ANALYSIS.labels(namespace, strategy).set(st.last_analysis.time.timestamp())
    for state in ("Pending", "Failed"):
        EFFECTS.labels(namespace, strategy, state).set(sum(e.state == state for e in st.effects))
    KILL_ENGAGED.labels(namespace, strategy).set(1 if st.kill_switch and st.kill_switch.engaged else 0)


def observe_drill(namespace: str, strategy: str, annotations: Mapping[str, Any] | None, now: datetime) -> float | None:
    """Set ``quantramp_operator_days_since_drill`` from the strategy's ``quantramp.io/last-drill``
    annotation (seed 004 "Drill Frequency": the badge is green < 90, yellow 90-120, red > 120 days);
    returns the days (fractional). Never drilled, or an unreadable annotation: the series is removed
    (None)."""
    days = days_since_drill(annotations, now)
    if days is None:
        try:
            DAYS_SINCE_DRILL.remove(namespace, strategy)
        except KeyError:
            pass
        return None
    DAYS_SINCE_DRILL.labels(namespace, strategy).set(round(days, 4))
    return days


def observe_next_analysis(namespace: str, strategy: str, due: datetime | None) -> None:
    """Set ``quantramp_operator_next_analysis_timestamp_seconds`` to ``due`` (the engine's
    :func:`~.engine.next_round`); None (a phase that is not analysed) removes the series."""
    if due is None:
        try:
            NEXT_ANALYSIS.remove(namespace, strategy)
        except KeyError:
            pass
        return
    NEXT_ANALYSIS.labels(namespace, strategy).set(due.timestamp())


def forget(namespace: str, strategy: str) -> None:
    """Drop a deleted strategy's series."""
    old = _phases.pop((namespace, strategy), None)
    if old is not None:
        INFO.remove(namespace, strategy, *old)
    for g in (CAPITAL, LAST_ANALYSIS, NEXT_ANALYSIS, KILL_ENGAGED, DAYS_SINCE_DRILL):
        try:
            g.remove(namespace, strategy)
        except KeyError:
            pass
    for state in ("Pending", "Failed"):
        try:
            EFFECTS.remove(namespace, strategy, state)
        except KeyError:
            pass


def record_round(verdict: str, measurements: dict, seconds: float) -> None:
    """Count one analysis round and its measurements."""
    ROUNDS.labels(verdict).inc()
    ROUND_SECONDS.observe(seconds)
    for name, m in measurements.items():
        MEASUREMENTS.labels(name, m.result).inc()
