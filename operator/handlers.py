"""kopf handlers: the thin shell around the pure ramp engine (:mod:`.engine`).

One loop per TradingStrategy (a kopf daemon ticking every ``QR_TICK_SECONDS``, default 2 s)
is the only writer of its status, so handlers never race each other; and every write is a
PUT of the status subresource carrying the ``resourceVersion`` it was decided from, so a
decision taken on a stale object (a spec edited meanwhile, another operator replica) is
rejected by the API server with 409 Conflict and taken again on the next tick from a fresh
read. One tick:

1. from the watched body, decide cheaply whether anything is due (a new ramp, a manual
   action, a kill switch request or an automatic kill trigger, an analysis round, pending
   effects, an unapplied generation, a periodic re-apply); if not, return (a body already
   found idle is not parsed again);
2. decide (:func:`.incident.kill_step` first, then :func:`.engine.start` or
   :func:`.engine.step`) from the watched body (from a GET
   after a conflict; no decision at all while the watch still shows an older write of our
   own), PUT the status;
3. converge the Deployments to ``status.allocation`` by server-side apply, then record
   ``appliedHash`` and ``observedGeneration`` (only now is the generation applied);
4. run the outbox: each effect once to completion, marked Done (or Failed, with attempts
   and the last error) in its own write; alias and tag moves are check-then-set, Events have
   deterministic names, kill broadcasts carry their command id, JIRA tickets are found by a
   label before one is created, so a crash between an effect and its mark repeats nothing
   (a Slack message may be sent twice: Slack has no idempotency key). A StopRole (a retired
   trader stopped and flat) holds the effects after it until done, as a must effect does.

Configuration (environment): ``MLFLOW_TRACKING_URI`` (with MLflow's own ``MLFLOW_TRACKING_USERNAME`` /
``_PASSWORD`` / ``_TOKEN``), ``QR_PROMETHEUS_URL`` (or ``PROMETHEUS_URL``), ``QR_REDIS_URL`` (or
``REDIS_URL``) with ``QR_REDIS_PASSWORD`` and ``QR_REDIS_USERNAME`` (:func:`redis_from_environment`),
``QR_POD_MLFLOW_TRACKING_URI`` / ``QR_POD_REDIS_URL`` (addresses as pods see them, never with
credentials: each strategy's pods get their own Redis user, :mod:`.redisacl`, its password derived from
``QR_REDIS_ACL_KEY``; ``QR_DRAIN_SECONDS`` bounds the wait for a deleted strategy's pods), ``QR_TICK_SECONDS``,
``QR_CONVERGE_SECONDS`` (periodic re-apply, default 300; a change of an owned Deployment's spec or ready
replicas triggers a re-apply at the next tick, and with it the strategy's Redis user is set again),
``QR_SHUTDOWN_GRACE_SECONDS`` (default 20: on stop, ticks in flight finish their writes),
``QR_WORKERS`` (threads for blocking calls, default 32), ``QR_KILL_EVIDENCE_SECONDS``,
``QR_KILL_ACK_TIMEOUT_SECONDS``, ``QR_KILL_ACK_ATTEMPTS``, ``QR_STOP_ROLE_ATTEMPTS``, ``QR_TRADER_DEFAULTS``
(the trader pods' image, resources, security contexts..., :class:`.workloads.TraderDefaults`); Slack
(``QR_SLACK_*``, :mod:`.notify`) and JIRA (``QR_JIRA_*``, :mod:`.tickets`).

Peering (several replicas, ``--peering``; the priorities are in :mod:`quantramp.operator.__main__`),
as kopf 1.45.2 does it (kopf/_core/reactor/orchestration.py, engines/peering.py, engines/daemons.py,
cogs/clients/watching.py):

- paused: every watch-stream (TradingStrategies, the owned Deployments; no list, no watch, so no
  handler, index update or finalizer change) and every daemon: kopf's ``daemon_killer`` sets each
  :func:`ticker`'s stop flag (reason ``OPERATOR_PAUSING``; a tick in flight finishes its writes
  within ``QR_SHUTDOWN_GRACE_SECONDS``, then it is cancelled), and a daemon spawned by an event that
  slipped in while pausing is stopped as it registers. With mandatory peering every replica starts
  paused and resumes only once its peering watch shows no live peer of higher (or equal) priority.
- not paused: the startup handler (it only builds clients: no task, thread or subscription acts on
  a strategy outside a tick; the evidence cache queries Prometheus only when a tick asks), the
  liveness endpoint (it runs the probe handlers, of which there are none: a paused standby is live
  and Ready), the metrics server, the malloc trimmer, the peering keep-alive and watch.
- finalizers and annotations: replicas share one finalizer name and the ``quantramp.io/`` progress
  annotations; a paused replica writes neither, the active one handles deletion for both. A
  strategy deleted while no replica is active waits for one, as with a stopped operator.
- handover: kopf's keep-alive task removes a stopping replica's record as soon as the operator is
  cancelled, while that replica's ticks still get up to ``QR_SHUTDOWN_GRACE_SECONDS`` to finish,
  so the standby may start ticking before the last tick of the old one ends. That overlap is what
  the resourceVersion on every status write is for (a stale decision is a 409, never a second
  transition); the outbox starts no further effect once the tick's daemon is told to stop, so only
  an effect already running may be attempted again by the new replica (each effect is idempotent,
  as after a crash; a Slack message may be sent twice).
- a replica paused after being active (a peer of higher priority appeared, or a keep-alive was so
  late that the standby took over) keeps stale memory: kopf does not drop index entries of
  objects deleted while paused (``strategies_by_model`` would keep a deleted strategy's claim on
  its model). So when a tick ends for ``OPERATOR_PAUSING`` the strategy's caches and series are
  dropped and the operator is stopped (exit status 75); restarted, it is the youngest replica and
  waits as the standby with fresh memory.
- status writes carry a field manager naming the replica (``quantramp-operator:<POD_NAME>``):
  ``metadata.managedFields`` of the status subresource says which replica wrote it last.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import functools
import json
import logging
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from collections.abc import Iterable, Mapping
from typing import Any

import kopf
import redis as redis_lib
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client import ApiException
from pydantic import ValidationError

from . import admission, engine, incident, redisacl
from . import metrics as M
from .criteria import safety_breached as criteria_safety_breached
from .evidence import EvidenceCache, custom_query
from .models import GROUP, PLURAL, VERSION, EffectRecord, TradingStrategySpec, TradingStrategyStatus
from .registry import Registry
from quantramp.trader import killswitch as trader_ks
from quantramp.trader.contract import PNL as PNL_SERIES
from quantramp.trader.state import Keys
from .workloads import (
    TraderDefaults,
    allocations,
    apply_deployments,
    book_scope,
    champion_stage,
    deployment_name,
    manifests_hash,
    pod_env_from_environment,
    pod_problem,
    render_deployments,
    trader_defaults_from_environment,
)

log = logging.getLogger("quantramp.operator")
TICK_SECONDS = float(os.environ.get("QR_TICK_SECONDS", "2"))
CONVERGE_SECONDS = float(os.environ.get("QR_CONVERGE_SECONDS", "300"))
#: how long a stopping operator lets each strategy's tick in flight finish its writes
SHUTDOWN_GRACE_SECONDS = float(os.environ.get("QR_SHUTDOWN_GRACE_SECONDS", "20"))
#: threads for blocking calls (API server, MLflow), and pooled API connections
WORKERS = int(os.environ.get("QR_WORKERS", "32"))
#: attempts of a best-effort effect (tag, event) before it is marked Failed
BEST_EFFORT_ATTEMPTS = 3
#: the kill triggers (alerts, stop-losses) are judged on evidence at most this old, seconds, whatever the
#: analysis interval and in every phase (a RolledBack strategy's champion still trades)
KILL_EVIDENCE_SECONDS = float(os.environ.get("QR_KILL_EVIDENCE_SECONDS", "10"))
#: how long a kill broadcast waits for the running trader pods' acknowledgements, seconds
KILL_ACK_TIMEOUT_SECONDS = float(os.environ.get("QR_KILL_ACK_TIMEOUT_SECONDS", "5"))
#: attempts (one per tick, each waiting up to QR_KILL_ACK_TIMEOUT_SECONDS) a kill broadcast waits for the
#: acknowledgement of a pod that is still starting, before it is recorded as missing
KILL_ACK_ATTEMPTS = int(os.environ.get("QR_KILL_ACK_ATTEMPTS", "6"))
#: attempts (one per tick) a StopRole effect waits for the retired pods to be gone before it gives up
STOP_ROLE_ATTEMPTS = int(os.environ.get("QR_STOP_ROLE_ATTEMPTS", "60"))
ACTION_ANNOTATION = f"{GROUP}/action"


def status_field_manager(environ: Mapping[str, str]) -> str:
    """Field manager of the status writes: ``quantramp-operator:<POD_NAME>`` (at most 128 characters, the API
    server's limit), so managedFields name the replica that wrote the status last; no POD_NAME:
    ``quantramp-operator``."""
    pod = environ.get("POD_NAME", "").strip()
    return f"quantramp-operator:{pod}"[:128] if pod else "quantramp-operator"


STATUS_FIELD_MANAGER = status_field_manager(os.environ)
#: set by ``__main__`` with --peering: raised when this replica loses the active role (see the module docs)
_STOP_ON_PAUSE: asyncio.Event | None = None
_LOST_ACTIVE_ROLE = False


def exit_on_pause(stop: asyncio.Event | None) -> None:
    """Stop the operator (kopf's ``stop_flag`` ``stop``) when a running tick is stopped because the operator
    pauses; None: never (standalone)."""
    global _STOP_ON_PAUSE, _LOST_ACTIVE_ROLE
    _STOP_ON_PAUSE, _LOST_ACTIVE_ROLE = stop, False


def lost_active_role() -> bool:
    """Whether the operator stopped because it was paused after being active."""
    return _LOST_ACTIVE_ROLE


def paused(ns: str, name: str) -> None:
    """A strategy's ticks stopped because the operator pauses (another replica is active): forget its
    caches and series, and stop the operator (restarted, it is the standby with fresh memory)."""
    global _LOST_ACTIVE_ROLE
    CTX.forget((ns, name))
    M.forget(ns, name)
    if _STOP_ON_PAUSE is not None and not _STOP_ON_PAUSE.is_set():
        _LOST_ACTIVE_ROLE = True
        log.warning("kopf paused this replica while it was active (its 'Pausing' line says why: a peer of higher "
                    "priority, usually): stopping it, so that it restarts as a standby with fresh memory")
        _STOP_ON_PAUSE.set()


class _Context:
    """Process-wide adapters, built at operator startup, and per-strategy memory (a cache only:
    losing it costs a re-read or a re-apply, never a decision)."""

    registry: Registry
    evidence: EvidenceCache
    apps: k8s.AppsV1Api
    core: k8s.CoreV1Api
    custom: k8s.CustomObjectsApi
    pod_env: dict[str, str]
    #: the platform's trader pod settings (``QR_TRADER_DEFAULTS``, :class:`.workloads.TraderDefaults`)
    trader_defaults: TraderDefaults = TraderDefaults()
    #: the operator's Redis (``QR_REDIS_URL``, else ``REDIS_URL``): the champion's live allocation
    redis: Any = None
    #: Slack (:class:`.notify.Slack`) and JIRA (:class:`.tickets.Jira`), None when not configured
    slack: Any = None
    jira: Any = None
    #: monotonic time of the last server-side apply per strategy
    converged: dict[tuple[str, str], float]
    #: Deployment generation the operator applied, per (namespace, Deployment)
    applied_generation: dict[tuple[str, str], int]
    #: for a body that had no work: (its resourceVersion, when its next round is due, its safety
    #: probe); the ticks in between cost a look-up, not a parse of the whole status
    idle_until: dict[tuple[str, str], tuple[str, datetime | None, engine.WatchProbe | None, Any]]
    #: resourceVersions of this operator's own recent status writes (newest last)
    written: dict[tuple[str, str], collections.deque[str]]
    #: strategies whose last write conflicted: the next tick reads the object fresh
    refetch: set[tuple[str, str]]
    #: ready replicas last seen per (namespace, Deployment): a change refreshes TradersReady
    ready_seen: dict[tuple[str, str], int]
    #: the key each strategy's Redis password is derived from (``QR_REDIS_ACL_KEY``, :mod:`.redisacl`), None
    #: without one (then no per-strategy users), and its fingerprint (on trader pod templates)
    acl_key: bytes | None = None
    acl_fingerprint: str = ""
    #: uids of strategies whose Redis Secret this process created (201): no create again; after a 409 the
    #: create is tried again at each convergence (the Secret may be a deleted namesake's, awaiting the
    #: garbage collector)
    redis_passwords: dict[str, str]
    #: uids of strategies whose Redis user was deleted: never set up again (a tick in flight during the
    #: deletion); guarded, with the ACL calls, by ``acl_lock``
    redis_deleted: set[str]
    acl_lock: threading.Lock

    def reset_memory(self) -> None:
        """Forget every per-strategy cache (startup, tests)."""
        self.converged, self.applied_generation, self.idle_until, self.written, self.refetch = {}, {}, {}, {}, set()
        self.ready_seen, self.redis_passwords, self.redis_deleted, self.acl_lock = {}, {}, set(), threading.Lock()

    def forget(self, key: tuple[str, str]) -> None:
        """Drop one strategy's caches (it was deleted)."""
        for memo in (self.converged, self.idle_until, self.written):
            memo.pop(key, None)
        self.refetch.discard(key)


CTX = _Context()


def now_utc() -> datetime:
    """Current time, UTC, second precision (what the status stores)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Build the adapters and tune kopf: our own annotation prefix, events at WARNING+."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-spec")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()
    # blocking API and registry calls run in threads: enough of them, and enough pooled connections,
    # that hundreds of strategies are not queued behind asyncio's default of cores + 4
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="quantramp"))
    conf = k8s.Configuration.get_default_copy()
    conf.connection_pool_maxsize = WORKERS
    k8s.Configuration.set_default(conf)
    CTX.apps, CTX.core, CTX.custom = k8s.AppsV1Api(), k8s.CoreV1Api(), k8s.CustomObjectsApi()
    CTX.registry = Registry(os.environ.get("MLFLOW_TRACKING_URI"))
    prom = os.environ.get("QR_PROMETHEUS_URL") or os.environ.get("PROMETHEUS_URL") or "http://127.0.0.1:9090"
    CTX.evidence = EvidenceCache(prom, max_age=min(1.0, TICK_SECONDS / 2))
    CTX.pod_env = pod_env_from_environment()
    CTX.trader_defaults = trader_defaults_from_environment()
    CTX.redis = redis_from_environment(os.environ)
    CTX.acl_key, CTX.acl_fingerprint = acl_key_from_environment(os.environ)
    if CTX.redis is not None and "REDIS_URL" in CTX.pod_env and CTX.acl_key is None:
        log.error("no %s: strategies' trader pods get no Redis user of their own (set redis.aclKeySecret)", redisacl.KEY_ENV)
    if CTX.redis is None:
        log.error("no QR_REDIS_URL / REDIS_URL: the kill switch cannot be broadcast (kill effects will retry until it is set)")
    from .notify import Slack
    from .tickets import Jira

    CTX.slack, CTX.jira = Slack.from_env(os.environ), Jira.from_env(os.environ)
    CTX.reset_memory()
    log.info("quantramp operator started: prometheus=%s mlflow=%s", prom, os.environ.get("MLFLOW_TRACKING_URI"))


def acl_key_from_environment(environ: Mapping[str, str]) -> tuple[bytes | None, str]:
    """The per-strategy password key (``QR_REDIS_ACL_KEY``; the chart: ``secretKeyRef`` to
    ``redis.aclKeySecret``) and its fingerprint, or (None, "") when unset. Raises ValueError on a short key."""
    raw = environ.get(redisacl.KEY_ENV, "")
    if not raw.strip():
        return None, ""
    key = redisacl.check_key(raw)
    return key, redisacl.key_fingerprint(key)


def redis_from_environment(environ: Mapping[str, str]) -> Any:
    """The operator's own Redis client, or None: ``QR_REDIS_URL`` (else ``REDIS_URL``) without credentials,
    and ``QR_REDIS_PASSWORD`` (the chart: ``secretKeyRef`` to ``redis.existingSecret``) with the optional
    ``QR_REDIS_USERNAME`` (empty: the ``default`` user). That user needs every key and channel under
    ``quantramp:`` and ``ACL SETUSER``/``DELUSER`` (the per-strategy users, :mod:`.redisacl`). Credentials
    in the URL still work, but the chart refuses them."""
    url = environ.get("QR_REDIS_URL") or environ.get("REDIS_URL")
    if not url:
        return None
    creds = {k: v for k, v in (("username", environ.get("QR_REDIS_USERNAME", "").strip()),
                               ("password", environ.get("QR_REDIS_PASSWORD", ""))) if v}
    return redis_lib.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, **creds)


# --- blocking calls: a routine lane and a priority lane -------------------------------------

#: set for the rest of a tick that reduces risk (rollback, abort, demote): its writes, Deployment
#: applies and effects run on their own threads, never queued behind hundreds of routine
#: analysis writes when the API server is the bottleneck
_PRIORITY: contextvars.ContextVar[bool] = contextvars.ContextVar("quantramp_priority", default=False)
_PRIORITY_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="quantramp-priority")
#: decisions that take the priority lane
DE_RISKING = frozenset({"rollback", "abort", "demote", "kill"})


async def blocking(fn: Any, *args: Any) -> Any:
    """Run a blocking call on a worker thread: the priority lane if this tick de-risks, else the default executor."""
    pool = _PRIORITY_POOL if _PRIORITY.get() else None
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))


# --- reading and writing the object -------------------------------------------------------


def parse(body: dict[str, Any]) -> tuple[TradingStrategySpec, TradingStrategyStatus | None]:
    """The spec and (if any) the status of a TradingStrategy body; raises ``ValidationError``."""
    spec = TradingStrategySpec.model_validate(dict(body.get("spec", {})))
    raw = dict(body.get("status") or {})
    status = TradingStrategyStatus.model_validate(raw) if raw.get("phase") else None
    return spec, status


def _action(body: dict[str, Any]) -> engine.Action | str | None:
    return engine.parse_action(((body.get("metadata") or {}).get("annotations") or {}).get(ACTION_ANNOTATION))


def _get(ns: str, name: str) -> dict[str, Any] | None:
    try:
        return CTX.custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def write_status(obj: dict[str, Any], status: TradingStrategyStatus) -> dict[str, Any] | None:
    """PUT ``status`` on the status subresource of ``obj`` with ``obj``'s resourceVersion.

    Returns the stored object, or None if the object changed since it was read (409 Conflict)
    or is gone (404): the caller decides again from a fresh read.
    """
    body = {
        "apiVersion": obj["apiVersion"], "kind": obj["kind"],
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
                     "resourceVersion": obj["metadata"]["resourceVersion"]},
        "spec": obj.get("spec", {}),
        "status": status.model_dump(by_alias=True, mode="json", exclude_none=True),
    }
    key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
    try:
        stored = CTX.custom.replace_namespaced_custom_object_status(GROUP, VERSION, key[0], PLURAL, key[1], body,
                                                                    field_manager=STATUS_FIELD_MANAGER)
    except ApiException as exc:
        if exc.status in (404, 409):
            CTX.refetch.add(key)
            M.CONFLICTS.inc()
            log.info("%s/%s: status write not applied (%s); deciding again next tick",
                     obj["metadata"]["namespace"], obj["metadata"]["name"], exc.status)
            return None
        raise
    CTX.written.setdefault(key, collections.deque(maxlen=8)).append(stored["metadata"]["resourceVersion"])
    return stored


# --- the tick -----------------------------------------------------------------------------


def is_due(body: dict[str, Any], now: datetime, key: tuple[str, str]) -> bool:
    """Whether the tick has anything to do for this (possibly stale) body: cheap, no I/O.

    A body found idle is remembered by resourceVersion with the time its next round is due and
    its safety probe, so the ticks in between cost a look-up, not a parse of the whole status.
    A safety guard breached in the latest evidence makes the strategy due at once (:func:`breached`).
    """
    if time.monotonic() - CTX.converged.get(key, 0.0) >= CONVERGE_SECONDS:
        return True
    rv = body["metadata"].get("resourceVersion", "")
    memo = CTX.idle_until.get(key)
    if memo is not None and memo[0] == rv:
        return (memo[1] is not None and now >= memo[1]) or bool(breached(key, memo[2])) or kill_due(key, memo[3], now)
    try:
        spec, status = parse(body)
    except ValidationError:
        return not (body.get("status") or {}).get("message", "").startswith("invalid spec")
    action = _action(body)
    if status is None or incident.requested(spec, status):
        return True
    if engine.start_reason(spec, status, action if isinstance(action, engine.Action) else None) and not engine.killed(status):
        return True
    if isinstance(action, engine.Action) and action.id != status.handled_action:
        return True
    if isinstance(action, str) and not status.message.startswith("quantramp.io/action"):
        return True
    if any(e.state == "Pending" for e in status.effects):
        return True
    if status.observed_generation != body["metadata"].get("generation"):
        return True
    due, probe = engine.next_round(spec, status), engine.watch_probe(spec, status)
    kprobe = KillProbe(spec, status.model_copy(update={"history": [], "effects": [], "criteria": {}, "last_analysis": None}),
                       live_series(spec, status))
    CTX.idle_until[key] = (rv, due, probe, kprobe)
    return (due is not None and now >= due) or bool(breached(key, probe)) or kill_due(key, kprobe, now)


@dataclasses.dataclass(frozen=True)
class KillProbe:
    """What the shell needs to judge a strategy's automatic kill triggers between decisions (a
    status stripped of its history, effects and analyses, and the live series to sum)."""

    spec: TradingStrategySpec
    status: TradingStrategyStatus
    live: list[tuple[str, str]]


def live_series(spec: TradingStrategySpec, status: TradingStrategyStatus | None) -> list[tuple[str, str]]:
    """The (role, stage label) series of the pods trading real capital: the champion, and the challenger
    in a live stage (paper fills are not money)."""
    if status is None:
        return []
    out = []
    champ = status.allocation.champion
    if champ.replicas:
        out.append(("champion", champion_stage(spec) if live_allocation() else champ.stage))
    ch = status.allocation.challenger
    if ch.replicas and not ch.paper and ch.capital_percent > 0:
        out.append(("challenger", ch.stage))
    return out


def kill_evidence(key: tuple[str, str], spec: TradingStrategySpec, status: TradingStrategyStatus | None,
                  live: list[tuple[str, str]] | None = None) -> incident.KillEvidence | None:
    """The kill triggers' evidence of one strategy from the latest snapshot (no query is sent)."""
    snap = getattr(getattr(CTX, "evidence", None), "latest", None)
    if snap is None:
        return None
    return snap.kill_evidence(key[0], key[1], live_series(spec, status) if live is None else live)


def kill_due(key: tuple[str, str], kp: KillProbe | None, now: datetime) -> bool:
    """Whether the latest snapshot fires an automatic kill or a P&L day record for this strategy."""
    if kp is None:
        return False
    kev = kill_evidence(key, kp.spec, kp.status, kp.live)
    if kev is None:
        return False
    return (not engine.killed(kp.status) and incident.auto_trigger(kp.spec, kp.status, kev, now) is not None) or \
        incident.day_due(kp.spec, kp.status, kev, now)


async def refresh_kill_evidence() -> None:
    """Take an evidence round when the latest is older than ``QR_KILL_EVIDENCE_SECONDS``: the kill
    triggers are judged in every phase, not only at analysis rounds (one round serves every strategy)."""
    cache = getattr(CTX, "evidence", None)
    snap = getattr(cache, "latest", None)
    if cache is None or (snap is not None and time.monotonic() - snap.taken_at < KILL_EVIDENCE_SECONDS):
        return
    try:
        await cache.get()
    except Exception as exc:  # noqa: BLE001 - the next tick tries again; rounds record their own errors
        log.warning("evidence round for the kill triggers failed: %s", exc)


def breached(key: tuple[str, str], probe: engine.WatchProbe | None) -> list[str]:
    """Safety guards the latest evidence snapshot (no query is sent) shows breached for this
    strategy: it is then judged at once rather than at its next round (a breach is acted on
    within seconds, whatever the interval)."""
    if probe is None:
        return []
    snap = getattr(getattr(CTX, "evidence", None), "latest", None)
    if snap is None or snap.error:
        return []
    ev = snap.evidence(key[0], key[1], probe.subject, probe.stage_label)
    return criteria_safety_breached(ev, probe.stage, probe.criteria)


def _fresh(key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any] | None | bool:
    """The object to decide from: the watched body, unless it is an echo of an older write of
    our own (the watch lags: ``False``, skip this tick) or the last write conflicted (read it
    fresh: ``None``). A stale body that slips through costs one 409, never a wrong write."""
    rv = body["metadata"].get("resourceVersion")
    if key in CTX.refetch:
        return None
    written = CTX.written.get(key)
    if written and rv in written and rv != written[-1]:
        return False
    return body


async def reconcile(ns: str, name: str, body: dict[str, Any], by_model: Mapping[str, Iterable[Claim]] | None = None,
                    stopped: Any = None) -> None:
    """One tick for one strategy (see the module docstring); ``by_model`` is the operator's
    :func:`strategies_by_model` index (None: no other strategy is considered); ``stopped``: the
    daemon's stop flag (truthy: no further effect is started)."""
    key = (ns, name)
    _PRIORITY.set(False)
    await refresh_kill_evidence()
    now = now_utc()
    if not is_due(body, now, key):
        return
    obj = _fresh(key, body)
    if obj is False:
        return
    if obj is None:
        CTX.refetch.discard(key)
        obj = await blocking(_get, ns, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        return
    generation = obj["metadata"].get("generation")
    try:
        spec, status = parse(obj)
    except ValidationError as exc:
        st = TradingStrategyStatus.model_validate(dict(obj.get("status") or {})) if (obj.get("status") or {}).get("phase") else TradingStrategyStatus()
        st.message = f"invalid spec: {exc}"[:1000]
        st.conditions = engine.set_condition(st.conditions, "Ready", "False", "InvalidSpec", st.message, now, generation)
        await blocking(write_status, obj, st)
        return
    action = _action(obj)
    if isinstance(action, str):
        base = status or TradingStrategyStatus()
        if not base.message.startswith("quantramp.io/action"):
            base = base.model_copy(update={"message": action})
            obj = await blocking(write_status, obj, base) or obj
        action = None

    t0 = time.monotonic()
    decision = await _decide(obj, spec, status, action, now, generation, by_model)
    _PRIORITY.set(decision is not None and decision.action in DE_RISKING)
    if decision is not None and decision.changed:
        stored = await blocking(write_status, obj, decision.status)
        if stored is None:
            return
        before, obj, status = status, stored, decision.status
        _count(before, status, decision, time.monotonic() - t0)
        if decision.action not in ("hold", "none", "ledger", "kill-taken"):
            log.info("%s/%s: %s: %s", ns, name, decision.action, status.message)
    if status is None:
        return
    M.observe(ns, name, status)
    M.observe_drill(ns, name, obj["metadata"].get("annotations"), now)
    M.observe_next_analysis(ns, name, engine.next_round(spec, status))
    obj, status = await _converge(obj, spec, status, generation, key)
    if obj is not None:
        await _run_outbox(obj, status, stopped)


def _count(before: TradingStrategyStatus | None, after: TradingStrategyStatus, decision: engine.Decision, seconds: float) -> None:
    """Bump the operator's counters for a stored decision."""
    last = after.last_analysis
    if last is not None and (before is None or before.last_analysis is None or before.last_analysis.time != last.time):
        M.record_round(last.verdict, last.measurements, seconds)
    if decision.action not in ("hold", "none"):
        M.TRANSITIONS.labels(decision.action).inc()
    if decision.action in ("rollback", "abort"):
        rec = after.history[-1] if after.history else None
        M.ROLLBACKS.labels(_reason_kind(rec.reason if rec else "", decision.action)).inc()


def _reason_kind(reason: str, action: str) -> str:
    """A low-cardinality reason label: the failing criterion, or the policy that fired."""
    if action == "abort":
        return "manual"
    for key in ("progressDeadline", "no evidence", "drawdown", "criticalAlerts", "pnlDeviation", "slippageRatio",
                "fillRatio", "precisionRatio"):
        if key in reason:
            return {"progressDeadline": "progress_deadline", "no evidence": "metric_error"}.get(key, key)
    return "other"


async def _decide(
    obj: dict[str, Any], spec: TradingStrategySpec, status: TradingStrategyStatus | None,
    action: engine.Action | None, now: datetime, generation: int | None,
    by_model: Mapping[str, Iterable[Claim]] | None = None,
) -> engine.Decision | None:
    key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
    kd = incident.kill_step(spec, status, kill_evidence(key, spec, status), now, generation)
    if kd is not None:
        return kd
    reason = engine.start_reason(spec, status, action)
    if reason is not None and engine.killed(status):
        if reason != "Retry":
            return None  # frozen: no new ramp while the kill switch is engaged (the status says so)
        return engine.step(spec, status, None, now, action, engine.must_effects_pending(status), generation)  # refused
    if reason is not None:
        if status is not None and engine.must_effects_pending(status):
            return None  # the previous ramp's alias moves first: the new ramp pins the champion they leave
        holder = model_holder(by_model, spec.model.name, key)
        if holder:  # no registry call for a strategy that may not move the model's aliases anyway
            facts = engine.StartFacts(False, status.champion_version if status else None, holder=holder)
        else:
            facts = await blocking(_start_facts, spec)
        return engine.start(spec, status, facts, now, reason, generation, action)
    assert status is not None
    evidence = None
    due = engine.next_round(spec, status)
    urgent = bool(breached(key, engine.watch_probe(spec, status))) if due is not None and now < due else False
    if due is not None and (now >= due or urgent) and status.ramp is not None:
        metrics = {m.name: custom_query(m.aggregate, m.query) for m in spec.analysis.metrics}
        snap = await CTX.evidence.get(tuple(metrics.values()))
        for field in getattr(snap, "errors", {}):
            M.QUERY_ERRORS.labels(field.split(":")[0]).inc()
        subject = "champion" if status.phase == "Promoted" else "challenger"
        # with live allocation the champion's series keep one stage label through the ramp
        champ = champion_stage(spec) if live_allocation() else None
        stage = champ if champ and subject == "champion" else status.stage or ""
        # the challenger's evidence streams are those of its book scope: this ramp and stage only
        scope = book_scope(status, "challenger", status.allocation.challenger.version) if subject == "challenger" else None
        evidence = snap.evidence(obj["metadata"]["namespace"], obj["metadata"]["name"], subject, stage,
                                 champion_stage=champ, metrics=metrics, scope=scope)
    return engine.step(spec, status, evidence, now, action, engine.must_effects_pending(status), generation, urgent)


def _start_facts(spec: TradingStrategySpec) -> engine.StartFacts:
    try:
        CTX.registry.check_version(spec.model.name, spec.model.version)
    except Exception as exc:  # noqa: BLE001 - any registry failure: wait, say why
        return engine.StartFacts(candidate_exists=False, champion_version=None, error=f"{type(exc).__name__}: {exc}"[:300])
    verdict = None
    adm = spec.admission
    if adm.mode != "off":
        gate = admission.Gate(adm.min_walk_forward_sharpe, adm.min_deflated_sharpe, adm.max_pbo, required=adm.mode == "enforce")
        try:
            verdict = admission.check(CTX.registry.version_run_metrics(spec.model.name, spec.model.version), gate)
        except Exception as exc:  # noqa: BLE001 - unreadable evidence is missing evidence, said plainly
            verdict = admission.Verdict(admitted=adm.mode != "enforce",
                                        reasons=[f"the version's training run could not be read: {type(exc).__name__}: {exc}"[:300]])
    return engine.StartFacts(True, CTX.registry.alias_version(spec.model.name, "champion"), admission=verdict)


async def _converge(
    obj: dict[str, Any], spec: TradingStrategySpec, status: TradingStrategyStatus, generation: int | None, key: tuple[str, str]
) -> tuple[dict[str, Any] | None, TradingStrategyStatus]:
    """Server-side apply the Deployments when their rendering changed (or periodically, to undo
    drift), then record appliedHash, observedGeneration and the TradersReady condition."""
    ns, name = key
    live = live_allocation()
    users = redis_users()
    manifests = render_deployments(name, ns, spec, status, CTX.pod_env, live_allocation=live,
                                   defaults=CTX.trader_defaults, redis_user=CTX.acl_fingerprint if users else False)
    allocs = allocations(name, ns, spec, status) if live else {}
    digest = manifests_hash([*manifests, {k: a.to_json() for k, a in allocs.items()}])
    periodic = time.monotonic() - CTX.converged.get(key, 0.0) >= CONVERGE_SECONDS
    if digest == status.applied_hash and status.observed_generation == generation and not periodic:
        # nothing to apply; while a role is not ready its pods are read every tick, so that TradersReady says why
        # (a trader that refused to trade, a missing Secret) as soon as the kubelet knows, not at the next convergence
        if not any(c.type == "TradersReady" and c.status == "False" for c in status.conditions):
            return obj, status
        return await _refresh_traders_ready(obj, status, generation, key)
    if users:  # before the Deployments: their pods log in with the Secret's password (again after a Redis restart)
        await blocking(_ensure_redis_user, obj)
    if allocs:  # before the Deployments: a champion (re)started by this apply finds its allocation
        await blocking(_write_allocations, allocs)
    if getattr(CTX, "redis", None) is not None:  # before the Deployments: a pod this apply stops knows if it is retired
        await blocking(_write_scopes, ns, name, {role: book_scope(status, role, getattr(status.allocation, role).version)
                                                 if getattr(status.allocation, role).replicas else "" for role in ("champion", "challenger")})
    applied = await blocking(apply_deployments, CTX.apps, obj, manifests)
    # the next periodic re-apply comes CONVERGE_SECONDS later, minus up to a quarter of it at random: strategies
    # started together do not all re-apply in the same second (at 500 that burst doubled the API load)
    CTX.converged[key] = time.monotonic() - random.uniform(0, CONVERGE_SECONDS / 4)
    for dep_name, dep_generation in applied:
        CTX.applied_generation[(ns, dep_name)] = dep_generation
    st = status.model_copy()  # shallow: only top-level fields are assigned below
    st.applied_hash, st.observed_generation = digest, generation
    return await _refresh_traders_ready(obj, st, generation, key, before=status)


async def _refresh_traders_ready(
    obj: dict[str, Any], st: TradingStrategyStatus, generation: int | None, key: tuple[str, str],
    before: TradingStrategyStatus | None = None,
) -> tuple[dict[str, Any] | None, TradingStrategyStatus]:
    """Set TradersReady from the Deployments and pods; write the status if it changed from ``before`` (default
    ``st``). Returns (stored object or None on a conflict, status) as :func:`_converge`."""
    before = st if before is None else before
    ready = await blocking(_traders_ready, *key, st)
    st = st.model_copy()
    st.conditions = engine.set_condition(st.conditions, "TradersReady", *ready, now_utc(), generation)
    if st == before:
        return obj, before
    stored = await blocking(write_status, obj, st)
    return (stored, st) if stored is not None else (None, before)


def live_allocation() -> bool:
    """Whether the champion's capital goes through Redis (the operator and the pods both have one)."""
    return getattr(CTX, "redis", None) is not None and "REDIS_URL" in CTX.pod_env


def redis_users() -> bool:
    """Whether each strategy's pods get their own Redis ACL user (:mod:`.redisacl`): the operator has a
    Redis (to create the users), passes its address to the pods and has the key of their passwords."""
    return getattr(CTX, "redis", None) is not None and "REDIS_URL" in CTX.pod_env and CTX.acl_key is not None


def _ensure_redis_user(obj: dict[str, Any]) -> None:
    """The strategy's Redis Secret (created with the derived password; never read) and its ACL user, set to
    that password and the current rules. Raises ``ApiException`` or ``redis.RedisError``: the Deployments
    are not applied, the next tick retries."""
    meta = obj["metadata"]
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    password = CTX.redis_passwords.get(uid)
    if password is None:
        password, created = redisacl.ensure_secret(CTX.core, obj, CTX.acl_key)
        if not created:
            log.debug("%s/%s: Secret %s exists (409): taken as this strategy's", ns, name, redisacl.secret_name(name))
    else:
        created = True
    with CTX.acl_lock:
        if uid in CTX.redis_deleted:
            return
        redisacl.ensure_user(CTX.redis, ns, name, password)
        if created:
            CTX.redis_passwords[uid] = password


def _delete_redis_user(ns: str, name: str, uid: str) -> bool:
    """Delete the strategy's Redis user; a tick in flight will not set it up again."""
    with CTX.acl_lock:
        CTX.redis_deleted.add(uid)
        CTX.redis_passwords.pop(uid, None)
        return redisacl.delete_user(CTX.redis, ns, name)


def _write_allocations(allocs: dict[str, Any]) -> None:
    """SET each live allocation record (idempotent; a failure fails the convergence, retried next tick)."""
    pipe = CTX.redis.pipeline(transaction=True)
    for key, a in allocs.items():
        pipe.set(key, a.to_json())
    pipe.execute()


def _write_scopes(ns: str, name: str, scopes: dict[str, str]) -> None:
    """SET the book scope the operator runs for each role ("" = none): a trader pod stopped while its
    own scope is not the live one is retired and flattens before it exits (trader ``retire_if_retired``)."""
    pipe = CTX.redis.pipeline(transaction=True)
    for role, scope in scopes.items():
        pipe.set(Keys(ns, name, role).live_scope, scope)
    pipe.execute()


def _traders_ready(ns: str, name: str, st: TradingStrategyStatus) -> tuple[str, str, str]:
    """(status, reason, message) of the TradersReady condition from the Deployments' status."""
    waiting = []
    for role in ("champion", "challenger"):
        want = getattr(st.allocation, role).replicas
        if not want:
            continue
        try:  # raw JSON, not client models (cheap at hundreds of strategies)
            resp = CTX.apps.read_namespaced_deployment_status(deployment_name(name, role), ns, _preload_content=False)
        except ApiException as exc:
            waiting.append(f"{role}: {exc.reason}")
            continue
        dep_status = json.loads(resp.data).get("status") or {}
        ready = dep_status.get("readyReplicas") or 0
        if ready < want:
            # the pods say why (a trader that refused to trade, a missing Secret) better than the Deployment does
            why = pod_problem(_pods(ns, name, role)) or next(
                (c.get("message", "") for c in dep_status.get("conditions") or [] if c.get("status") == "False"), "")
            waiting.append(f"{role}: {ready}/{want} ready" + (f" ({why})" if why else ""))
    if waiting:
        return "False", "TradersNotReady", "; ".join(waiting)
    return "True", "TradersReady", "every trader Deployment is ready"


async def _run_outbox(obj: dict[str, Any], status: TradingStrategyStatus, stopped: Any = None) -> None:
    """Run pending effects in order, each marked in its own status write; a failing must effect
    stops the run (ordering) and shows in the EffectsPending condition. Once ``stopped`` is truthy
    (the operator stops or pauses: another replica may take over) no further effect is started."""
    if not any(e.state == "Pending" for e in status.effects):
        return
    st = status.model_copy(update={"effects": list(status.effects)})  # effects are replaced in the list, never mutated
    for i, eff in enumerate(st.effects):
        if eff.state != "Pending":
            continue
        if stopped:
            return
        try:
            note = await blocking(_execute, obj, eff, st)
            st.effects[i] = eff.model_copy(update={"state": "Done", "attempts": eff.attempts + 1, "last_error": "",
                                                   "result": (note or "")[:500]})
        except Exception as exc:  # noqa: BLE001 - recorded on the effect, retried next tick
            err = f"{type(exc).__name__}: {exc}"[:500]
            if not isinstance(exc, Waiting):
                M.EFFECT_FAILURES.labels(eff.kind).inc()
            limit = STOP_ROLE_ATTEMPTS if eff.kind == "StopRole" and isinstance(exc, Waiting) else BEST_EFFORT_ATTEMPTS
            failed = isinstance(exc, EffectFailed) or (not eff.must and eff.attempts + 1 >= limit)
            st.effects[i] = eff.model_copy(update={"state": "Failed" if failed else "Pending", "attempts": eff.attempts + 1, "last_error": err})
            (log.info if isinstance(exc, Waiting) else log.warning)(
                "%s/%s effect %s %s: %s", obj["metadata"]["namespace"], obj["metadata"]["name"], eff.id, eff.kind, err)
        stuck = [e for e in st.effects if e.state == "Pending" and e.attempts > 0]
        gen = st.observed_generation
        if stuck:
            e = stuck[0]
            msg = f"effect {e.id} {e.kind} {e.model} {e.alias or e.version}: {e.attempts} attempt(s), last error: {e.last_error}"
            st.conditions = engine.set_condition(st.conditions, "EffectsPending", "True", "EffectFailing", msg, now_utc(), gen)
        elif any(c.type == "EffectsPending" for c in st.conditions):
            st.conditions = engine.set_condition(st.conditions, "EffectsPending", "False", "EffectsDone", "every effect is done", now_utc(), gen)
        stored = await blocking(write_status, obj, st)
        if stored is None:
            return
        obj = stored
        if st.effects[i].state == "Pending" and (st.effects[i].must or st.effects[i].kind == "StopRole"):
            return  # in order: a retired role is stopped and flat before the rest of a rollback runs


def event_name(strategy: str, effect_id: str) -> str:
    """Deterministic Event name of an effect: creating it twice is a 409, not a second Event."""
    return f"{strategy}.{effect_id}".lower()[:253]


#: crash-test hook (tests/integration/test_ticket_crash.py): the named point SIGKILLs the operator; never set in production
FAILPOINT = os.environ.get("QR_FAILPOINT", "")


def failpoint(name: str) -> None:
    """SIGKILL this process if ``QR_FAILPOINT`` names this point (the crash tests' seeded kill points)."""
    if FAILPOINT == name:
        log.warning("failpoint %s: SIGKILL", name)
        os.kill(os.getpid(), signal.SIGKILL)


class Waiting(Exception):
    """An effect that cannot complete yet (retried on the next ticks, in order)."""


class EffectFailed(Exception):
    """An effect that completed badly and must not be retried (recorded as Failed, with the reason)."""


def _execute(obj: dict[str, Any], eff: EffectRecord, st: TradingStrategyStatus) -> str | None:
    """Run one effect, idempotently; returns a note for the record (or None). Effects that learn
    something (kill acknowledgements, a ticket's key) record it in ``st`` (the outbox's copy, written
    with the effect's mark)."""
    if eff.kind == "StopRole":
        return _stop_role(obj, eff)
    if eff.kind == "BroadcastKill":
        return _broadcast_kill(obj, eff, st)
    if eff.kind in ("Notify", "OpenTicket", "CommentTicket"):
        return _notify_or_ticket(obj, eff, st)
    if eff.kind == "SetAlias":
        CTX.registry.set_alias(eff.model, eff.alias, eff.version)
    elif eff.kind == "RemoveAlias":
        CTX.registry.remove_alias(eff.model, eff.alias)
    elif eff.kind == "TagVersion":
        CTX.registry.tag_version(eff.model, eff.version, eff.tags)
    elif eff.kind == "RecordEvent":
        meta = obj["metadata"]
        now = datetime.now(timezone.utc)
        event = k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name=event_name(meta["name"], eff.id), namespace=meta["namespace"]),
            involved_object=k8s.V1ObjectReference(
                api_version=obj["apiVersion"], kind=obj["kind"], name=meta["name"], namespace=meta["namespace"], uid=meta["uid"],
            ),
            reason=eff.reason, message=eff.message, type=eff.type or "Normal",
            first_timestamp=now, last_timestamp=now, count=1,
            source=k8s.V1EventSource(component="quantramp-operator"), reporting_component="quantramp-operator",
        )
        try:
            CTX.core.create_namespaced_event(meta["namespace"], event)
        except ApiException as exc:
            if exc.status != 409:
                raise


def _pods(ns: str, name: str, role: str | None = None) -> list[dict[str, Any]]:
    """The strategy's trader pods (terminating ones included), raw JSON."""
    sel = f"quantramp.io/strategy={name}" + (f",quantramp.io/role={role}" if role else "")
    resp = CTX.core.list_namespaced_pod(ns, label_selector=sel, _preload_content=False)
    return json.loads(resp.data).get("items") or []


def _stop_role(obj: dict[str, Any], eff: EffectRecord) -> str:
    """StopRole: done when the role's pods are gone and its book (scope ``eff.stage``) is flat.

    The pods flatten as they stop (the operator marked their scope retired before scaling them to
    zero); while any pod of the role still exists this raises :class:`Waiting`. A book left with a
    position raises :class:`EffectFailed` (a human must flatten it: the message says how much)."""
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    running = [p["metadata"]["name"] for p in _pods(ns, name, eff.role)]
    if running:
        raise Waiting(f"waiting for the {eff.role} to stop and flatten: {', '.join(running)}")
    if CTX.redis is None:
        return f"{eff.role} stopped (no Redis: its book could not be checked)"
    keys = Keys(ns, name, eff.role, eff.stage)
    raw = CTX.redis.get(keys.retired)
    if raw is not None:
        rec = json.loads(raw)
        if rec.get("flat"):
            return f"{eff.role} stopped flat"
        raise EffectFailed(f"the {eff.role} stopped with {rec.get('position_qty')} shares open in book {keys.stage}: flatten by hand")
    day = CTX.redis.get(keys.current)
    qty = CTX.redis.hget(keys.book(day.decode() if isinstance(day, bytes) else day), "position_qty") if day else None
    if qty is None or int(qty) == 0:
        return f"{eff.role} stopped flat"
    raise EffectFailed(f"the {eff.role} stopped with {int(qty)} shares open in book {keys.stage} (no stop record): flatten by hand")


def _broadcast_kill(obj: dict[str, Any], eff: EffectRecord, st: TradingStrategyStatus) -> str:
    """BroadcastKill: set or clear the strategy's kill latch and publish (one MULTI, the trader's
    protocol, :mod:`quantramp.trader.killswitch`; idempotent by command id), then wait up to
    ``QR_KILL_ACK_TIMEOUT_SECONDS`` for every running trader pod's acknowledgement and record them
    and the broadcast-to-last-ack latency in ``st.killSwitch``. A pod that does not acknowledge is
    named in the note; the latch stays set, so it finds it when it reads Redis again."""
    if CTX.redis is None:
        raise RuntimeError("no Redis configured (QR_REDIS_URL): the kill switch cannot be broadcast")
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    keys = Keys(ns, name, "")
    ks = st.kill_switch
    mine = ks is not None and ks.command_id == eff.id
    roles = sorted({(p["metadata"].get("labels") or {}).get("quantramp.io/role", "") for p in _pods(ns, name)} - {""})
    if eff.attempts == 0 or not mine or ks.sent_at is None:
        action = trader_ks.KILL if eff.engaged else trader_ks.UNKILL
        cmd = trader_ks.KillCommand(action, reason=eff.reason, flatten=eff.flatten, id=eff.id, sent_at=time.time())
        pipe = CTX.redis.pipeline(transaction=True)
        if eff.engaged:
            pipe.set(keys.kill, cmd.to_json())
        else:
            pipe.delete(keys.kill)
        pipe.publish(keys.kill, cmd.to_json())
        pipe.execute()
        sent_at = cmd.sent_at
    else:  # a retry: the latch is set (or cleared) already; pods that start read it and acknowledge
        sent_at = ks.sent_at.timestamp()
    acks: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + KILL_ACK_TIMEOUT_SECONDS
    while len(acks) < len(roles) and time.monotonic() < deadline:
        for role in roles:
            raw = None if role in acks else CTX.redis.get(keys.kill_ack(role))
            if raw is not None:
                ack = json.loads(raw)
                if ack.get("id") == eff.id:
                    acks[role] = ack
        if len(acks) < len(roles):
            time.sleep(0.005)
    if mine:
        from .models import KillAck

        recorded = {r: KillAck(acked_at=datetime.fromtimestamp(a["acked_at"], timezone.utc),
                               latency_seconds=None if a.get("latency_s") is None else round(float(a["latency_s"]), 4))
                    for r, a in acks.items()}
        lat = max((a.latency_seconds for a in recorded.values() if a.latency_seconds is not None), default=None)
        st.kill_switch = ks.model_copy(update={"sent_at": datetime.fromtimestamp(sent_at, timezone.utc), "acks": recorded,
                                               "latency_seconds": lat})
        if st.kill_history and st.kill_history[-1].command_id == eff.id:
            st.kill_history = [*st.kill_history[:-1], st.kill_history[-1].model_copy(update={"latency_seconds": lat})]
    missing = [r for r in roles if r not in acks]
    if missing and eff.attempts + 1 < KILL_ACK_ATTEMPTS:  # a pod still starting: look again next tick
        raise Waiting(f"waiting for the acknowledgement of {', '.join(missing)} (the latch is set)")
    if mine and st.kill_switch.latency_seconds is not None:
        M.KILL_LATENCY.observe(st.kill_switch.latency_seconds)
    verb = "kill" if eff.engaged else "release"
    note = f"{verb} acknowledged by {', '.join(sorted(acks)) or 'no pod (none running)'}"
    if missing:
        note += f"; no acknowledgement from {', '.join(missing)} within {KILL_ACK_TIMEOUT_SECONDS:g} s (the latch is set)"
    return note


def _impact_usd(ns: str, name: str, st: TradingStrategyStatus, kind: str) -> float | None:
    """The incident's P&L impact in USD from the latest snapshot: for a rollback, the challenger's P&L
    in the stage it failed; for a kill, the live roles' P&L of the day. None: no series."""
    snap = getattr(getattr(CTX, "evidence", None), "latest", None)
    if snap is None or snap.error:
        return None
    rows = snap.series.get((ns, name), {})
    if kind == "RolledBack":
        stage = next((h.stage for h in reversed(st.history) if h.event == "RolledBack"), st.stage or "")
        v = rows.get(("challenger", stage), {}).get("pnl_usd")
        if v is None:  # the retired challenger's series went stale when its pod stopped: its last value
            q = (f'max(last_over_time({PNL_SERIES}{{namespace="{ns}", strategy="{name}", role="challenger", '
                 f'stage="{stage}"}}[1h]))')
            try:
                got = CTX.evidence.prom.custom_query(q, timeout=5)
                v = float(got[0]["value"][1]) if got else None
            except Exception:  # noqa: BLE001 - the ticket says "unknown" rather than fail
                v = None
        return None if v is None else float(v)
    return st.pnl_day.pnl_usd if st.pnl_day else None


def _notify_or_ticket(obj: dict[str, Any], eff: EffectRecord, st: TradingStrategyStatus) -> str:
    """Notify (Slack), OpenTicket (JIRA, find-or-create by label: never a duplicate), CommentTicket
    (once per marker). Not configured: done, with a note saying so."""
    from .notify import notice
    from .tickets import postmortem, ticket_label

    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    if eff.kind == "Notify":
        if CTX.slack is None:
            return "Slack not configured"
        CTX.slack.post(notice(eff.reason, ns, name, st, link=f"kubectl quantramp status {name} -n {ns}"))
        return None
    if CTX.jira is None:
        return "JIRA not configured"
    if eff.kind == "OpenTicket":
        transition = eff.id.rsplit(".", 1)[0]
        t = postmortem(ns, name, meta["uid"], st, transition, eff.message, eff.type or "major",
                       _impact_usd(ns, name, st, eff.reason), now_utc())
        key, created = CTX.jira.find_or_create(t)
        if created:
            failpoint("ticket-created")
        st.tickets = dict(list({**st.tickets, transition: key}.items())[-10:])
        return f"{'opened' if created else 'found'} {key}"
    added = CTX.jira.comment_once(ticket_label(meta["uid"], eff.ticket), eff.reason, eff.message)
    return "commented" if added else "already commented"


#: one claim on a registered model: (active, creationTimestamp, namespace, name); active means the
#: strategy's pinned ramp is on this model and not finished (Progressing, Paused, Promoted)
Claim = tuple[bool, str, str, str]


@kopf.index(GROUP, VERSION, PLURAL)
def strategies_by_model(namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any) -> dict[str, Claim] | None:
    """Index: registered model name -> claims of the strategies that name it (see :func:`model_holder`)."""
    model = (spec.get("model") or {}).get("name")
    if not model:
        return None
    ramp = status.get("ramp") or {}
    active = ramp.get("model") == model and status.get("phase") in ("Progressing", "Paused", "Promoted")
    return {model: (active, meta.get("creationTimestamp") or "", namespace, name)}


def model_holder(by_model: Mapping[str, Iterable[Claim]] | None, model: str, me: tuple[str, str]) -> str:
    """``namespace/name`` of the strategy that owns ``model`` if it is not ``me``, else "".

    One TradingStrategy per registered model: the ``champion`` and ``challenger`` aliases it moves
    belong to the model, so two strategies ramping one model would undo each other's promotions.
    The owner is the strategy whose ramp on the model is active (the oldest, should there be
    several), else the oldest that names it (creationTimestamp, then namespace/name); the others
    wait in Pending with reason ModelInUse and start when the owner is deleted, finishes (rolled
    back or aborted) or moves to another model.
    """
    claims = list((by_model or {}).get(model, ()))
    if not claims:
        return ""
    owner = min(claims, key=lambda c: (not c[0], c[1], c[2], c[3]))
    return "" if (owner[2], owner[3]) == me else f"{owner[2]}/{owner[3]}"


@kopf.daemon(GROUP, VERSION, PLURAL, initial_delay=TICK_SECONDS / 2,
             cancellation_backoff=SHUTDOWN_GRACE_SECONDS, cancellation_timeout=1.0)
async def ticker(body: kopf.Body, stopped: kopf.DaemonStopped, strategies_by_model: kopf.Index, **_: Any) -> None:
    """The strategy's one writer: a tick (:func:`reconcile`) every ``QR_TICK_SECONDS``.

    A daemon rather than a kopf timer so that stopping the operator is clean: the stop flag ends
    the loop between ticks, and a tick in flight finishes its writes (within
    ``QR_SHUTDOWN_GRACE_SECONDS``) instead of being cancelled between a write and the next. A
    failed tick is logged and counted, and the next one runs as usual.
    """
    meta = body["metadata"]
    while not stopped:
        try:
            await reconcile(meta["namespace"], meta["name"], dict(body), strategies_by_model, stopped)
        except Exception:  # noqa: BLE001 - one bad tick must never stop the strategy's ticks
            M.TICK_ERRORS.inc()
            log.exception("%s/%s: tick failed; next tick in %ss", meta["namespace"], meta["name"], TICK_SECONDS)
        # a plain sleep, as kopf advises for async daemons (``await stopped.wait(t)`` leaves a task behind
        # that kopf re-raises at exit); the stop flag is seen at most one tick late
        await asyncio.sleep(TICK_SECONDS)
    if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.OPERATOR_PAUSING:
        paused(meta["namespace"], meta["name"])


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "quantramp"})
def owned_deployment_changed(body: kopf.Body, **_: Any) -> None:
    """Drift: a Deployment the operator owns got a spec generation it did not apply (someone scaled or
    edited it), or its ready replicas changed (the TradersReady condition is stale): converge at the
    owner's next tick (an unchanged apply is a no-op for the API server)."""
    meta = body.get("metadata", {})
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    want = CTX.applied_generation.get((ns, name))
    ready = (body.get("status") or {}).get("readyReplicas") or 0
    seen = CTX.ready_seen.get((ns, name))
    CTX.ready_seen[(ns, name)] = ready
    if (want is not None and meta.get("generation") != want) or (seen is not None and seen != ready):
        strategy = (meta.get("labels") or {}).get("quantramp.io/strategy", "")
        CTX.converged.pop((ns, strategy), None)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
async def forget(body: kopf.Body, **_: Any) -> None:
    """Drop per-strategy memory; the Deployments go with their owner reference. Both roles' book scopes
    are marked retired first (best effort), so trader pods stopped by the garbage collector flatten as
    they exit rather than leave positions no pod manages (review row 36; a pod stopped before this
    handler runs, or while the operator is down, keeps its position: not covered yet)."""
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if getattr(CTX, "redis", None) is not None:
        try:
            await blocking(_write_scopes, ns, name, {"champion": "", "challenger": ""})
        except Exception as exc:  # noqa: BLE001 - deletion goes on; the log says what was not done
            log.error("%s/%s deleted: could not mark its traders retired (%s): they may stop without flattening", ns, name, exc)
    CTX.forget((ns, name))
    M.forget(ns, name)


#: how long a deletion waits for the strategy's trader pods to stop before removing their Redis user
DRAIN_SECONDS = float(os.environ.get("QR_DRAIN_SECONDS", "60"))


def _scale_down(ns: str, name: str) -> int:
    """Scale the strategy's Deployments to 0 (merge patch: ``deployments`` list and patch, both already
    granted; the operator may not delete them, the garbage collector does). Returns how many."""
    sel = f"quantramp.io/strategy={name},app.kubernetes.io/managed-by=quantramp"
    resp = CTX.apps.list_namespaced_deployment(ns, label_selector=sel, _preload_content=False)
    items = json.loads(resp.data).get("items") or []
    for dep in items:
        CTX.apps.patch_namespaced_deployment(dep["metadata"]["name"], ns, {"spec": {"replicas": 0}})
    return len(items)


async def _drain_traders(ns: str, name: str, deadline: float = DRAIN_SECONDS) -> bool:
    """Stop the strategy's trader pods and wait (at most ``deadline`` s) until none is left, so that they
    flatten and exit while their Redis user still exists: removing it first left them retrying logins
    (failed ``auth`` entries in ACL LOG) until the garbage collector, which acts only after the strategy is
    gone, removed their Deployments. Returns whether every pod was gone in time (best effort: errors are
    logged and the deletion goes on)."""
    try:
        await blocking(_scale_down, ns, name)
        end = time.monotonic() + deadline
        while await blocking(_pods, ns, name):
            if time.monotonic() >= end:
                log.warning("%s/%s deleted: trader pods still running after %.0f s; removing their Redis user anyway",
                            ns, name, deadline)
                return False
            await asyncio.sleep(1.0)
        return True
    except ApiException as exc:
        log.warning("%s/%s deleted: could not stop its trader pods first (%s)", ns, name, exc.status)
        return False


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, retries=6, backoff=5)
async def drop_redis_user(body: kopf.Body, **_: Any) -> None:
    """Stop the strategy's trader pods (:func:`_drain_traders`), then remove its Redis ACL user (its Secret
    goes with the owner reference). Redis unreachable: retried 6 times, 5 s apart, then the deletion goes on
    and the log says the user is left (harmless: its password was only in the deleted Secret, and a
    re-created strategy of the same name, a new uid, derives another)."""
    if not redis_users():
        return
    meta = body["metadata"]
    await _drain_traders(meta["namespace"], meta["name"])
    try:
        await blocking(_delete_redis_user, meta["namespace"], meta["name"], meta["uid"])
    except redis_lib.RedisError as exc:
        log.error("%s/%s deleted: could not delete its Redis user %s (%s)", meta["namespace"], meta["name"],
                  redisacl.username(meta["namespace"], meta["name"]), exc)
        raise kopf.TemporaryError(f"ACL DELUSER failed: {exc}", delay=5) from exc
