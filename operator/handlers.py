"""kopf handlers: the thin shell around the pure canary engine.

* create / resume: start the ramp (pin the champion version from the MLflow ``champion``
  alias) or converge the Deployments to the stored status;
* a change of ``spec.model.version``: restart the ramp for the new candidate;
* a timer every ``QR_TICK_SECONDS`` (default 2 s): analysis when due, per the strategy's own
  ``spec.analysis.interval``.

Configuration (environment): ``MLFLOW_TRACKING_URI``, ``QR_PROMETHEUS_URL`` (or
``PROMETHEUS_URL``), ``QR_POD_MLFLOW_TRACKING_URI`` / ``QR_POD_REDIS_URL`` (addresses as pods
see them), ``QR_TICK_SECONDS``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from pydantic import ValidationError

from . import engine
from .evidence import EvidenceCache
from .models import GROUP, PLURAL, VERSION, TradingStrategySpec, TradingStrategyStatus
from .registry import Registry
from .workloads import apply_deployments, pod_env_from_environment, render_deployments

log = logging.getLogger("quantramp.operator")
TICK_SECONDS = float(os.environ.get("QR_TICK_SECONDS", "2"))


class _Context:
    """Process-wide adapters, built at operator startup."""

    registry: Registry
    evidence: EvidenceCache
    apps: k8s.AppsV1Api
    pod_env: dict[str, str]


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
    CTX.apps = k8s.AppsV1Api()
    CTX.registry = Registry(os.environ.get("MLFLOW_TRACKING_URI"))
    prom = os.environ.get("QR_PROMETHEUS_URL") or os.environ.get("PROMETHEUS_URL") or "http://127.0.0.1:9090"
    CTX.evidence = EvidenceCache(prom, max_age=min(1.0, TICK_SECONDS / 2))
    CTX.pod_env = pod_env_from_environment()
    log.info("quantramp operator started: prometheus=%s mlflow=%s", prom, os.environ.get("MLFLOW_TRACKING_URI"))


def _parse(body: kopf.Body) -> tuple[TradingStrategySpec, TradingStrategyStatus | None]:
    spec = TradingStrategySpec.model_validate(dict(body.get("spec", {})))
    raw = dict(body.get("status") or {})
    status = TradingStrategyStatus.model_validate(raw) if raw.get("phase") else None
    return spec, status


def _dump(status: TradingStrategyStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def merge_patch(old: Any, new: Any) -> Any:
    """JSON merge patch (RFC 7386) turning ``old`` into ``new``: removed keys become None."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out = {k: merge_patch(old.get(k), v) for k, v in new.items()}
    out.update({k: None for k in old if k not in new})
    return out


def _patch_status(patch: kopf.Patch, body: kopf.Body, status: TradingStrategyStatus) -> None:
    old = dict(body.get("status") or {})
    for key, value in merge_patch(old, _dump(status)).items():
        patch.status[key] = value


async def _execute(effects: list[engine.Effect], body: kopf.Body, spec: TradingStrategySpec, status: TradingStrategyStatus) -> None:
    """Run effects in order; each is idempotent, so a retry after a crash repeats nothing harmful."""
    name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    for effect in effects:
        if isinstance(effect, engine.ApplyWorkloads):
            manifests = render_deployments(name, ns, spec, status, CTX.pod_env)
            await asyncio.to_thread(apply_deployments, CTX.apps, dict(body), manifests)
        elif isinstance(effect, engine.SetAlias):
            await asyncio.to_thread(CTX.registry.set_alias, effect.model, effect.alias, effect.version)
        elif isinstance(effect, engine.RemoveAlias):
            await asyncio.to_thread(CTX.registry.remove_alias, effect.model, effect.alias)
        elif isinstance(effect, engine.TagVersion):
            await asyncio.to_thread(CTX.registry.tag_version, effect.model, effect.version, effect.tags)
        elif isinstance(effect, engine.RecordEvent):
            kopf.event(body, type=effect.type, reason=effect.reason, message=effect.message[:1000])
        log.info("%s/%s effect %s", ns, name, effect)


def _record(patch: kopf.Patch, body: kopf.Body, decision: engine.Decision) -> None:
    """Write the decision's status with its effects as ``pendingEffects`` (the outbox).

    The effects run on the next tick, after the status is stored: a crash can repeat an
    idempotent effect but never lose one, and nothing new is decided while any is pending.
    """
    status = decision.status.model_copy(
        update={"pending_effects": [engine.effect_to_dict(e) for e in decision.effects]}
    )
    _patch_status(patch, body, status)


async def _flush(body: kopf.Body, patch: kopf.Patch, spec: TradingStrategySpec, status: TradingStrategyStatus) -> bool:
    """Run pending effects, then clear them. Returns True if there were any."""
    if not status.pending_effects:
        return False
    effects = [engine.effect_from_dict(raw) for raw in status.pending_effects]
    await _execute(effects, body, spec, status)
    patch.status["pendingEffects"] = []
    return True


async def _start(body: kopf.Body, spec: TradingStrategySpec, patch: kopf.Patch) -> None:
    try:
        await asyncio.to_thread(CTX.registry.check_version, spec.model.name, spec.model.version)
    except Exception as exc:
        raise kopf.TemporaryError(
            f"model {spec.model.name} v{spec.model.version} is not available in MLflow: {exc}", delay=10
        ) from exc
    champion = await asyncio.to_thread(CTX.registry.alias_version, spec.model.name, "champion")
    _record(patch, body, engine.start(spec, champion, now_utc(), body["metadata"].get("generation")))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
async def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Start a new ramp, or converge one already under way (pending effects, then Deployments)."""
    try:
        spec, status = _parse(body)
    except ValidationError as exc:
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    if status is None or status.challenger_version != spec.model.version:
        await _start(body, spec, patch)
        return
    if not await _flush(body, patch, spec, status):
        await _execute([engine.ApplyWorkloads()], body, spec, status)


@kopf.on.field(GROUP, VERSION, PLURAL, field="spec.model.version")
async def candidate_changed(body: kopf.Body, patch: kopf.Patch, old: Any, new: Any, **_: Any) -> None:
    """A new candidate version restarts the ramp from the first stage."""
    if old is None or old == new:
        return
    spec, _status = _parse(body)
    kopf.event(body, type="Normal", reason="CandidateChanged", message=f"candidate v{old} -> v{new}: ramp restarts")
    await _start(body, spec, patch)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_SECONDS, initial_delay=TICK_SECONDS)
async def analyse(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Run pending effects; otherwise analyse the current stage when due and record the decision."""
    try:
        spec, status = _parse(body)
    except ValidationError:
        return
    if status is None or await _flush(body, patch, spec, status):
        return
    if status.phase != "Progressing":
        return
    snapshot = await CTX.evidence.get()
    stage = status.stage or ""
    evidence = snapshot.evidence(body["metadata"]["namespace"], body["metadata"]["name"], {"champion": stage, "challenger": stage})
    decision = engine.decide(spec, status, evidence, now_utc(), body["metadata"].get("generation"))
    if decision.action == "none":
        return
    _record(patch, body, decision)
    if decision.action != "hold":
        log.info("%s: %s", body["metadata"]["name"], decision.status.message)
