"""Prometheus adapter: gather the evidence of every strategy with one query per metric.

Each query is grouped ``by (namespace, strategy, role, stage)`` across all strategies, so the
cost of an analysis round does not grow with the number of strategies.  Only series of a
role's *current* stage count (the trader labels its metrics with its stage), so a pod of the
previous stage cannot pass or fail the new one.  Metric names are the trader's
(``quantramp.trader.metrics``).

A failed query makes only the criteria that read its field an Error (``Evidence.errors``),
not the whole round; values are passed on as Prometheus returned them (NaN and +-Inf
included) for the criteria to judge as Errors.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_api_client import PrometheusConnect

from quantramp.trader import contract as C

from .criteria import Evidence, RoleEvidence

_BY = ", ".join(C.EVIDENCE_LABELS)


def _q(agg: str, name: str) -> str:
    return f"{agg} by ({_BY}) ({name})"


# RoleEvidence field -> PromQL over all strategies (series names: the evidence contract).
QUERIES: dict[str, str] = {
    "pnl_usd": _q("max", C.PNL),
    "simulated_pnl_usd": _q("max", C.SIMULATED_PNL),
    # the largest drawdown since the pod started, i.e. within the stage (pods restart per stage)
    "drawdown_ratio": _q("max", C.MAX_DRAWDOWN),
    "slippage_realized_bps": _q("max", C.SLIPPAGE_REALIZED),
    "slippage_modeled_bps": _q("max", C.SLIPPAGE_MODELED),
    "fill_ratio": _q("min", C.FILL_RATIO),
    "precision_ratio": _q("min", C.PRECISION),
    "trades": _q("sum", C.TRADES),
    "capital_usd": _q("max", C.CAPITAL),
}
# Critical alerts of the role under judgement (the challenger while ramping, the champion once promoted).
ALERTS_QUERY = f'count by ({_BY}) (ALERTS{{alertstate="firing", severity="critical"}})'

Key = tuple[str, str]  # (namespace, strategy)


@dataclass
class Snapshot:
    """All strategies' raw figures at one instant: {(ns, strategy): {(role, stage): {field: value}}}.

    ``errors`` maps a field (or ``"alerts"``) whose query failed to the error; ``error`` is set
    when every query failed (Prometheus down).
    """

    taken_at: float
    series: dict[Key, dict[tuple[str, str], dict[str, float]]] = field(default_factory=dict)
    alerts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    def evidence(self, namespace: str, strategy: str, subject: str, stage: str, champion_stage: str | None = None) -> Evidence:
        """Evidence for one strategy: ``subject`` role (challenger|champion) in ``stage``, compared with
        the champion's series in ``champion_stage`` (default: ``stage``)."""
        if self.error:
            return Evidence(error=self.error)
        rows = self.series.get((namespace, strategy), {})

        def role(r: str, st: str) -> RoleEvidence | None:
            values = rows.get((r, st))
            return RoleEvidence(**values) if values else None

        return Evidence(
            subject=role(subject, stage),
            champion=role("champion", stage if champion_stage is None else champion_stage),
            critical_alerts=self.alerts.get((namespace, strategy, subject, stage), 0),
            errors=dict(self.errors),
        )


def collect(prom: PrometheusConnect, timeout: float = 5.0) -> Snapshot:
    """Run every query once (``timeout`` seconds each); a failed query is recorded in ``errors``,
    and if all fail the snapshot carries ``error``."""
    snap = Snapshot(taken_at=time.monotonic())
    for fname, query in QUERIES.items():
        try:
            for item in prom.custom_query(query, timeout=timeout):
                labels: dict[str, Any] = item["metric"]
                key = (labels.get("namespace", ""), labels.get("strategy", ""))
                sub = (labels.get("role", ""), labels.get("stage", ""))
                snap.series.setdefault(key, {}).setdefault(sub, {})[fname] = float(item["value"][1])
        except Exception as exc:  # noqa: BLE001 - this field's criteria become Errors
            snap.errors[fname] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        for item in prom.custom_query(ALERTS_QUERY, timeout=timeout):
            labels = item["metric"]
            akey = (labels.get("namespace", ""), labels.get("strategy", ""), labels.get("role", ""), labels.get("stage", ""))
            snap.alerts[akey] = int(float(item["value"][1]))
    except Exception as exc:  # noqa: BLE001
        snap.errors["alerts"] = f"{type(exc).__name__}: {exc}"[:300]
    if len(snap.errors) == len(QUERIES) + 1:
        snap.error = next(iter(snap.errors.values()))
    # stamped when the round ends, so callers waiting on the lock reuse it instead of starting another
    snap.taken_at = time.monotonic()
    return snap


class EvidenceCache:
    """Shares one round of queries between all strategies' analyses.

    ``await get()`` returns the latest :class:`Snapshot`, refreshing it when older than
    ``max_age`` seconds; concurrent callers wait for one refresh.
    """

    def __init__(self, url: str, max_age: float = 1.0, timeout: float = 5.0) -> None:
        self.prom = PrometheusConnect(url=url, disable_ssl=True)
        self.timeout = timeout
        self.max_age = max_age
        self._snap: Snapshot | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Snapshot:
        async with self._lock:
            if self._snap is None or time.monotonic() - self._snap.taken_at > self.max_age:
                self._snap = await asyncio.to_thread(collect, self.prom, self.timeout)
            return self._snap
