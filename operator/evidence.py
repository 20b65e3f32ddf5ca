"""Prometheus adapter: gather the evidence of every strategy with one query per metric.

Each query is grouped ``by (namespace, strategy, role, stage)`` across all strategies, so the
cost of an analysis round does not grow with the number of strategies.  Only series of a
role's *current* stage count (the trader labels its metrics with its stage), so a pod of the
previous stage cannot pass or fail the new one.  Metric names are the trader's
(``quantramp.trader.metrics``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_api_client import PrometheusConnect

from .engine import Evidence, RoleEvidence

# RoleEvidence field -> PromQL over all strategies.
QUERIES: dict[str, str] = {
    "pnl_usd": "max by (namespace, strategy, role, stage) (quantramp_pnl_usd)",
    "simulated_pnl_usd": "max by (namespace, strategy, role, stage) (quantramp_simulated_pnl_usd)",
    # the largest drawdown since the pod started, i.e. within the stage (pods restart per stage)
    "drawdown_ratio": "max by (namespace, strategy, role, stage) (quantramp_max_drawdown_ratio)",
    "slippage_realized_bps": "max by (namespace, strategy, role, stage) (quantramp_slippage_realized_bps)",
    "slippage_modeled_bps": "max by (namespace, strategy, role, stage) (quantramp_slippage_modeled_bps)",
    "fill_ratio": "min by (namespace, strategy, role, stage) (quantramp_fill_ratio)",
    "precision_ratio": "min by (namespace, strategy, role, stage) (quantramp_model_precision_ratio)",
    "trades": "sum by (namespace, strategy, role, stage) (quantramp_trades_total)",
    "capital_usd": "max by (namespace, strategy, role, stage) (quantramp_capital_usd)",
}
# Critical alerts on the challenger fail its stage; the champion's go to on-call, not to the ramp.
ALERTS_QUERY = 'count by (namespace, strategy, stage) (ALERTS{alertstate="firing", severity="critical", role="challenger"})'

Key = tuple[str, str]  # (namespace, strategy)


@dataclass
class Snapshot:
    """All strategies' raw figures at one instant: {(ns, strategy): {(role, stage): {field: value}}}."""

    taken_at: float
    series: dict[Key, dict[tuple[str, str], dict[str, float]]] = field(default_factory=dict)
    alerts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    error: str | None = None

    def evidence(self, namespace: str, strategy: str, stages: dict[str, str]) -> Evidence:
        """Evidence for one strategy; ``stages`` maps role -> the stage whose series count."""
        if self.error:
            return Evidence(error=self.error)
        rows = self.series.get((namespace, strategy), {})
        roles = {}
        for role in ("champion", "challenger"):
            values = rows.get((role, stages.get(role, "")))
            roles[role] = RoleEvidence(**values) if values else None
        return Evidence(
            challenger=roles["challenger"],
            champion=roles["champion"],
            critical_alerts=self.alerts.get((namespace, strategy, stages.get("challenger", "")), 0),
        )


def collect(prom: PrometheusConnect, timeout: float = 5.0) -> Snapshot:
    """Run every query once (``timeout`` seconds each); on any failure return a Snapshot carrying the error."""
    snap = Snapshot(taken_at=time.monotonic())
    try:
        for fname, query in QUERIES.items():
            for item in prom.custom_query(query, timeout=timeout):
                labels: dict[str, Any] = item["metric"]
                key = (labels.get("namespace", ""), labels.get("strategy", ""))
                sub = (labels.get("role", ""), labels.get("stage", ""))
                snap.series.setdefault(key, {}).setdefault(sub, {})[fname] = float(item["value"][1])
        for item in prom.custom_query(ALERTS_QUERY, timeout=timeout):
            labels = item["metric"]
            akey = (labels.get("namespace", ""), labels.get("strategy", ""), labels.get("stage", ""))
            snap.alerts[akey] = int(float(item["value"][1]))
    except Exception as exc:  # any transport or query error makes the whole round an Error
        return Snapshot(taken_at=time.monotonic(), error=f"{type(exc).__name__}: {exc}"[:500])
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
