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
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prometheus_api_client import PrometheusConnect

from quantramp.trader import contract as C

from . import metrics as M
from quantramp.trader.evidence import FAMILIES, Sums

from .criteria import Evidence, RoleEvidence
from .incident import KillEvidence

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
    # the kill triggers' evidence (quantramp.operator.incident): the day's P&L and its trading date
    "day_pnl_usd": _q("max", C.DAY_PNL),
    "trading_date": _q("max", C.TRADING_DATE),
}
# Critical alerts of the role under judgement (the challenger while ramping, the champion once promoted).
ALERTS_QUERY = f'count by ({_BY}) (ALERTS{{alertstate="firing", severity="critical"}})'
# Alerts that engage the strategy's kill switch (seed 003 §3.1: ``action: AUTO_KILL_SWITCH``), any role or stage.
KILL_ALERTS_QUERY = f'count by ({_BY}, alertname) (ALERTS{{alertstate="firing", action="AUTO_KILL_SWITCH"}})'

# The evidence streams' counter families (quantramp.trader.evidence), one query each for all strategies.
_STREAM_BY = _BY + ", " + ", ".join(C.EVIDENCE_STREAM_LABELS)
STREAM_QUERIES: dict[str, str] = {fld: f"max by ({_STREAM_BY}) ({name})" for fld, name in C.EVIDENCE_FAMILIES.items()}

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
    #: user criteria: {query: {(ns, strategy): {(role, stage): value}}}
    custom: dict[str, dict[Key, dict[tuple[str, str], float]]] = field(default_factory=dict)
    #: firing AUTO_KILL_SWITCH alerts: {(ns, strategy): ["alertname/role", ...]}
    kill_alerts: dict[Key, list[str]] = field(default_factory=dict)
    #: evidence-stream counters: {(ns, strategy): {(role, scope, criterion): {family field: value}}}
    streams: dict[Key, dict[tuple[str, str, str], dict[str, float]]] = field(default_factory=dict)

    def stream_sums(self, namespace: str, strategy: str, role: str, scope: str) -> dict[str, Sums]:
        """The evidence streams of one pod's book ``scope``: criterion -> sums (a criterion some of
        whose six families are missing is left out: a partial scrape is no reading)."""
        out: dict[str, Sums] = {}
        for (r, sc, crit), fams in self.streams.get((namespace, strategy), {}).items():
            if r == role and sc == scope and len(fams) == len(FAMILIES):
                out[crit] = Sums(*(fams[f] for f in FAMILIES))
        return out

    def kill_evidence(self, namespace: str, strategy: str, live: list[tuple[str, str]]) -> KillEvidence:
        """The kill triggers' evidence of one strategy: its AUTO_KILL_SWITCH alerts, and the day's P&L
        summed over the ``live`` (role, stage) series (the pods trading real capital) that report
        the latest trading date among them."""
        if self.error:
            return KillEvidence(error=self.error)
        alerts = tuple(sorted(self.kill_alerts.get((namespace, strategy), ())))
        if "day_pnl_usd" in self.errors or "trading_date" in self.errors:
            return KillEvidence(alerts=alerts)
        rows = self.series.get((namespace, strategy), {})
        got = [(rows[k]["trading_date"], rows[k]["day_pnl_usd"]) for k in live
               if "trading_date" in rows.get(k, {}) and "day_pnl_usd" in rows.get(k, {})]
        got = [(d, p) for d, p in got if math.isfinite(d) and math.isfinite(p) and d >= 19000101]
        if not got:
            return KillEvidence(alerts=alerts)
        day = max(d for d, _ in got)
        text = f"{int(day) // 10000:04d}-{int(day) // 100 % 100:02d}-{int(day) % 100:02d}"
        return KillEvidence(day=text, day_pnl_usd=sum(p for d, p in got if d == day), alerts=alerts)

    def evidence(
        self, namespace: str, strategy: str, subject: str, stage: str, champion_stage: str | None = None,
        metrics: dict[str, str] | None = None, scope: str | None = None,
    ) -> Evidence:
        """Evidence for one strategy: ``subject`` role (challenger|champion) in ``stage``, compared with
        the champion's series in ``champion_stage`` (default: ``stage``); ``metrics`` maps a user
        criterion's name to its full query (:func:`custom_query`); ``scope``: the subject's book
        scope, whose evidence streams are read (None: none)."""
        if self.error:
            return Evidence(error=self.error)
        rows = self.series.get((namespace, strategy), {})

        def role(r: str, st: str) -> RoleEvidence | None:
            values = rows.get((r, st))
            return RoleEvidence(**values) if values else None

        custom: dict[str, float] = {}
        errors = {k: v for k, v in self.errors.items() if not k.startswith(("query:", "stream:"))}
        failed = [k for k in self.errors if k.startswith("stream:")]
        if failed:
            errors["streams"] = self.errors[failed[0]]
        for name, query in (metrics or {}).items():
            if f"query:{query}" in self.errors:
                errors[f"custom:{name}"] = self.errors[f"query:{query}"]
            elif query not in self.custom:
                errors[f"custom:{name}"] = "not measured in this round yet"
            else:
                v = self.custom[query].get((namespace, strategy), {}).get((subject, stage))
                if v is not None:
                    custom[name] = v
        return Evidence(
            subject=role(subject, stage),
            champion=role("champion", stage if champion_stage is None else champion_stage),
            critical_alerts=self.alerts.get((namespace, strategy, subject, stage), 0),
            errors=errors,
            custom=custom,
            streams={} if scope is None else self.stream_sums(namespace, strategy, subject, scope),
        )


def custom_query(aggregate: str, query: str) -> str:
    """The batched form of a user criterion's query: one result per (namespace, strategy, role, stage)."""
    return f"{aggregate} by ({_BY}) ({query})"


#: threads running one round's queries side by side (a round is as slow as its slowest query, not their sum)
QUERY_THREADS = 8
_POOL = ThreadPoolExecutor(max_workers=QUERY_THREADS, thread_name_prefix="quantramp-prom")


def collect(prom: PrometheusConnect, timeout: float = 5.0, custom: list[str] | tuple[str, ...] = ()) -> Snapshot:
    """Run every built-in query and each of ``custom`` (full queries) once, concurrently, ``timeout``
    seconds each; a failed query is recorded in ``errors``, and if all built-in ones fail the
    snapshot carries ``error``."""
    snap = Snapshot(taken_at=time.monotonic())
    jobs = ([("query:" + q, q) for q in custom] + list(QUERIES.items()) + [("alerts", ALERTS_QUERY), ("kill_alerts", KILL_ALERTS_QUERY)]
            + [("stream:" + f, q) for f, q in STREAM_QUERIES.items()])

    def run(query: str) -> list[dict[str, Any]] | Exception:
        try:
            return prom.custom_query(query, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - only the criteria on this query become Errors
            return exc

    for (fname, query), result in zip(jobs, _POOL.map(run, [q for _, q in jobs])):
        if isinstance(result, Exception):
            snap.errors[fname] = f"{type(result).__name__}: {result}"[:300]
            continue
        for item in result:
            labels: dict[str, Any] = item["metric"]
            key = (labels.get("namespace", ""), labels.get("strategy", ""))
            sub = (labels.get("role", ""), labels.get("stage", ""))
            value = float(item["value"][1])
            if fname == "alerts":
                snap.alerts[(*key, *sub)] = int(value)
            elif fname == "kill_alerts":
                snap.kill_alerts.setdefault(key, []).append(f"{labels.get('alertname', '?')}/{sub[0] or '?'}")
            elif fname.startswith("query:"):
                snap.custom.setdefault(query, {}).setdefault(key, {})[sub] = value
            elif fname.startswith("stream:"):
                stream = (sub[0], labels.get("scope", ""), labels.get("criterion", ""))
                snap.streams.setdefault(key, {}).setdefault(stream, {})[fname[len("stream:"):]] = value
            else:
                snap.series.setdefault(key, {}).setdefault(sub, {})[fname] = value
        if fname.startswith("query:"):
            snap.custom.setdefault(query, {})
    builtin = [k for k in snap.errors if not k.startswith(("query:", "stream:"))]
    if len(builtin) == len(QUERIES) + 2:
        snap.error = snap.errors[builtin[0]]
    # stamped when the round ends, so callers waiting on the lock reuse it instead of starting another
    snap.taken_at = time.monotonic()
    return snap


class EvidenceCache:
    """Shares one round of queries between all strategies' analyses.

    ``await get()`` returns the latest :class:`Snapshot`, refreshing it when older than
    ``max_age`` seconds; concurrent callers wait for one refresh.
    """

    #: a user query nobody asked for in this many seconds is dropped from the rounds
    CUSTOM_TTL = 600.0

    def __init__(self, url: str, max_age: float = 1.0, timeout: float = 5.0) -> None:
        self.prom = PrometheusConnect(url=url, disable_ssl=True)
        self.timeout = timeout
        self.max_age = max_age
        self._snap: Snapshot | None = None
        self._lock = asyncio.Lock()
        self._custom: dict[str, float] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantramp-evidence")

    @property
    def latest(self) -> Snapshot | None:
        """The last snapshot taken, whatever its age (no query is sent)."""
        return self._snap

    async def get(self, custom: list[str] | tuple[str, ...] = ()) -> Snapshot:
        """The latest snapshot; ``custom`` user queries are added to the rounds (a new one forces a round)."""
        now = time.monotonic()
        new = [q for q in custom if q not in self._custom]
        for q in custom:
            self._custom[q] = now
        async with self._lock:
            for q in [q for q, t in self._custom.items() if now - t > self.CUSTOM_TTL]:
                del self._custom[q]
            stale = self._snap is None or time.monotonic() - self._snap.taken_at > self.max_age
            if stale or any(q not in self._snap.custom and f"query:{q}" not in self._snap.errors for q in new):
                t0 = time.monotonic()
                # on a thread of its own, never queued behind the status writes on the default executor
                self._snap = await asyncio.get_running_loop().run_in_executor(
                    self._executor, collect, self.prom, self.timeout, tuple(self._custom))
                M.EVIDENCE_ROUND_SECONDS.observe(time.monotonic() - t0)
                M.EVIDENCE_ROUNDS.inc()
                M.PROM_QUERIES.inc(len(QUERIES) + 2 + len(STREAM_QUERIES) + len(self._custom))
            return self._snap
