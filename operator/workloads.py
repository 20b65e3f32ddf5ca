"""Champion and challenger trader Deployments: rendered from (spec, status.allocation), applied idempotently.

:func:`render_deployments` is pure. What each role runs (model version, share of capital,
paper or live, replicas, stage) is what the engine decided and wrote in
``status.allocation`` (:func:`quantramp.operator.engine.step`), never re-derived from
``spec.model.version``; the spec supplies the settings that follow it at once (capital in
USD, risk limits, image, command, env, symbols, market data). :func:`apply_deployments` server-side
applies them with the field manager ``quantramp`` and an owner reference to the
TradingStrategy, so fields removed from the rendering are removed from the Deployment, drift
is overwritten, and deleting the strategy deletes its Deployments through the garbage
collector.

Capital split (DESIGN.md "Flow of one ramp"): the challenger trades ``stage %`` of the
strategy capital, the champion ``100 − stage %``.  At 0% (shadow) the challenger paper-trades
the full strategy capital.  After a rollback the challenger is scaled to zero; after
promotion the champion Deployment runs the promoted version at 100%.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from quantramp.trader import allocation as alloc

from . import redisacl
from .models import TradingStrategySpec, TradingStrategyStatus

TRADER_PORT = 8080
ROLES = ("champion", "challenger")
#: the environment variable holding :class:`TraderDefaults` as JSON (the Helm chart's ``trader`` values)
TRADER_DEFAULTS_ENV = "QR_TRADER_DEFAULTS"
#: Pod Security "restricted" for trader pods (the image's user is 10001; HOME and every temporary file are
#: under /tmp, an emptyDir)
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class _Defaults(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Resources(_Defaults):
    """Container resources: ``{"requests": {...}, "limits": {...}}``, quantities as Kubernetes writes them."""

    requests: dict[str, str | int | float] = Field(default_factory=dict)
    limits: dict[str, str | int | float] = Field(default_factory=dict)


class SecretRef(_Defaults):
    """``{"name": ...}``: a Secret in the pod's namespace (a LocalObjectReference)."""

    name: str = Field(min_length=1, max_length=253, pattern=_NAME)


class MlflowSecret(_Defaults):
    """``{"name", "usernameKey", "passwordKey", "tokenKey"}``: a Secret that must exist in each strategy's
    namespace with the trader pods' MLflow credentials (basic auth, or a bearer token); each key is
    optional in the Secret (``secretKeyRef.optional``), an empty key name leaves that variable out."""

    name: str = Field(min_length=1, max_length=253, pattern=_NAME)
    username_key: str = "username"
    password_key: str = "password"
    token_key: str = "token"

    def env(self) -> list[dict[str, Any]]:
        """``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` / ``_TOKEN`` (what MLflow clients read) by ``secretKeyRef``."""
        pairs = (("MLFLOW_TRACKING_USERNAME", self.username_key), ("MLFLOW_TRACKING_PASSWORD", self.password_key),
                 ("MLFLOW_TRACKING_TOKEN", self.token_key))
        return [{"name": env, "valueFrom": {"secretKeyRef": {"name": self.name, "key": key, "optional": True}}}
                for env, key in pairs if key]


class TraderDefaults(_Defaults):
    """What the platform sets for every trader pod (``QR_TRADER_DEFAULTS``, JSON with these camelCase keys;
    the Helm chart renders it from its ``trader`` values). A strategy's ``spec.trader.image`` wins over
    ``image``; the rest is the platform's alone. Security contexts are Kubernetes PodSecurityContext and
    SecurityContext objects passed through as given (the API server validates them); an empty object
    means none."""

    image: str = Field(default="quantramp:dev", min_length=1, max_length=512, pattern=r"^\S+$",
                       description="trader image when the strategy names none")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources = Field(default_factory=lambda: Resources(requests={"cpu": "100m", "memory": "256Mi"},
                                                                   limits={"memory": "512Mi"}))
    pod_security_context: dict[str, Any] = Field(default_factory=lambda: copy.deepcopy(RESTRICTED_POD))
    security_context: dict[str, Any] = Field(default_factory=lambda: copy.deepcopy(RESTRICTED_CONTAINER))
    service_account_name: str = Field(default="", max_length=253, pattern=_NAME + "|^$",
                                      description="empty: the namespace's default ServiceAccount")
    image_pull_secrets: list[SecretRef] = Field(default_factory=list, description="Secrets in each strategy's namespace")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    #: ``prometheus.io/scrape`` annotations on trader pods (off when a PodMonitor scrapes them: one scrape path)
    scrape_annotations: bool = True
    #: the trader pods' MLflow credentials (a Secret in each strategy's namespace); None: MLflow needs none
    mlflow_secret: MlflowSecret | None = None
    #: models that run code on load (pickle/cloudpickle, MLflow pyfunc) may be served: QR_ALLOW_PICKLE_MODELS on every
    #: trader pod (quantramp.trader.model); off by default: only skops scikit-learn models load
    allow_pickle_models: bool = False
    #: the trader pods' log lines: text, or json (one object per line; QR_LOG_FORMAT, quantramp.trader.logs)
    log_format: Literal["text", "json"] = "text"


def trader_defaults_from_environment(environ: Mapping[str, str] | None = None) -> TraderDefaults:
    """Parse :data:`TRADER_DEFAULTS_ENV` from ``environ`` (default ``os.environ``); unset or empty: the
    built-in :class:`TraderDefaults`. Raises ``ValueError`` naming the variable and every bad field."""
    raw = (os.environ if environ is None else environ).get(TRADER_DEFAULTS_ENV, "").strip()
    if not raw:
        return TraderDefaults()
    try:
        return TraderDefaults.model_validate_json(raw)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{TRADER_DEFAULTS_ENV} is invalid: {errors}") from None


def deployment_name(strategy: str, role: str) -> str:
    """Name of the Deployment of ``role`` (champion|challenger) for ``strategy``."""
    return f"{strategy}-{role}"


def _allocation(spec: TradingStrategySpec, status: TradingStrategyStatus, role: str) -> tuple[int, str | None, float, bool, str]:
    """(replicas, model version, capital USD, paper, stage) for ``role``, from ``status.allocation``."""
    a = getattr(status.allocation, role)
    replicas = a.replicas if a.version else 0
    return replicas, a.version, spec.capital_usd * a.capital_percent / 100.0, a.paper, a.stage


def book_scope(status: TradingStrategyStatus, role: str, version: str | None) -> str:
    """The trader's durable-book key scope (``QR_BOOK_SCOPE``): the challenger's book belongs to one
    ramp and stage (review B12: a new candidate never resumes the previous one's trades and
    drawdown); the champion's to its model version (review B11: its day P&L and daily-loss halt
    survive the ramp's stage transitions)."""
    if role == "champion":
        return f"v{version}" if version else ""
    ramp = status.ramp.id if status.ramp else "r0"
    return f"{ramp}-{getattr(status.allocation, role).stage or 'none'}"


def champion_stage(spec: TradingStrategySpec) -> str:
    """The champion's stage label with live allocation: the last stage's name, whatever the ramp's
    stage (the champion is the production model; its series keep one label through a ramp)."""
    return spec.stages[-1].name


def allocations(name: str, namespace: str, spec: TradingStrategySpec, status: TradingStrategyStatus) -> dict[str, alloc.Allocation]:
    """The live allocations the operator writes to Redis: {key: Allocation}, the champion's while it
    runs (its capital changes at every stage transition, review B11), empty otherwise."""
    replicas, version, capital, _, _ = _allocation(spec, status, "champion")
    if not replicas or not version or capital <= 0:
        return {}
    risk = spec.risk
    return {alloc.key(namespace, name, "champion"): alloc.Allocation(
        capital_usd=round(capital, 2),
        max_position_usd=round(capital * risk.max_position_percent / 100, 2),
        max_order_usd=round(capital * risk.max_order_percent / 100, 2),
        max_daily_loss_usd=round(capital * risk.max_daily_loss_percent / 100, 2),
    )}


def render_deployments(
    name: str,
    namespace: str,
    spec: TradingStrategySpec,
    status: TradingStrategyStatus,
    pod_env: dict[str, str] | None = None,
    live_allocation: bool = False,
    defaults: TraderDefaults | None = None,
    redis_user: bool | str = False,
) -> list[dict[str, Any]]:
    """Return the two Deployment manifests (champion, challenger) as dicts.

    ``pod_env`` adds environment shared by every trader pod (e.g. MLFLOW_TRACKING_URI,
    REDIS_URL as the pods should see them, never with credentials: :func:`pod_env_from_environment`).
    ``redis_user``: the pods log in to Redis as the strategy's own ACL user, from the operator's
    per-strategy Secret by ``secretKeyRef`` (:func:`quantramp.operator.redisacl.trader_env`); a string is the
    fingerprint of the key the passwords derive from (:func:`quantramp.operator.redisacl.key_fingerprint`), put on
    the pod template so that a key rotation rolls the pods; the MLflow
    credentials, if the platform set ``defaults.mlflow_secret``, come the same way. No credential
    is ever a plain value in the manifests. Owner references are added by the caller.
    ``live_allocation``: the champion's capital comes from Redis (:func:`allocations`), and
    its pod template carries only what does not change within a ramp (the strategy capital as
    the ceiling its limits are checked against, the last stage's name as its stage label),
    so a stage transition does not restart it. ``defaults``: the platform's pod settings (image unless
    the spec names one, resources, security contexts, ServiceAccount, pull secrets, scheduling);
    None: the built-in :class:`TraderDefaults` (restricted Pod Security). The pods mount no API token
    (traders never call the API server) and get an emptyDir at /tmp (their only writable path).
    """
    d = defaults or TraderDefaults()
    out = []
    for role in ROLES:
        replicas, version, capital, paper, stage = _allocation(spec, status, role)
        live = live_allocation and role == "champion"
        if live:
            capital, stage = spec.capital_usd, champion_stage(spec)
        labels = {
            "app.kubernetes.io/name": "quantramp-trader",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": role,
            "app.kubernetes.io/managed-by": "quantramp",
            "quantramp.io/strategy": name,
            "quantramp.io/role": role,
        }
        risk = spec.risk
        env = {
            "QR_STRATEGY": name,
            "QR_NAMESPACE": namespace,
            "QR_ROLE": role,
            "QR_STAGE": stage,
            "QR_BOOK_SCOPE": book_scope(status, role, version),
            "QR_MODEL_URI": f"models:/{spec.model.name}/{version}" if version else "",
            "QR_SYMBOLS": ",".join(spec.symbols),
            "QR_CAPITAL_USD": f"{capital:.2f}",
            "QR_PAPER": "true" if paper else "false",
            "QR_BAR_INTERVAL_SECONDS": f"{spec.trader.bar_interval_seconds:g}",
            "QR_MAX_POSITION_USD": f"{capital * risk.max_position_percent / 100:.2f}",
            "QR_MAX_ORDER_USD": f"{capital * risk.max_order_percent / 100:.2f}",
            "QR_MAX_DAILY_LOSS_USD": f"{capital * risk.max_daily_loss_percent / 100:.2f}",
            "QR_PORT": str(TRADER_PORT),
            **(pod_env or {}),
        }
        if live:
            env["QR_ALLOCATION_KEY"] = alloc.key(namespace, name, role)
        if spec.calendars:
            env["QR_CALENDARS"] = ",".join(f"{sym}={cal}" for sym, cal in spec.calendars.items())
        env.update(market_data_env(spec))
        env.update(broker_env(spec, role, paper))
        # the thresholds the evidence streams embed (quantramp.trader.evidence): the spec's criteria and
        # the pod's stage P&L band (the champion's: the last stage's)
        band = next((st.pnl_band for st in spec.stages if st.name == stage), None)
        env["QR_EVIDENCE_SLIPPAGE_RATIO"] = f"{spec.analysis.criteria.max_slippage_ratio:g}"
        env["QR_EVIDENCE_FILL_RATIO"] = f"{spec.analysis.criteria.min_fill_ratio:g}"
        env["QR_EVIDENCE_BLOCK_BARS"] = str(spec.analysis.judgement.block_bars)
        env["QR_EVIDENCE_PRECISION_RATIO"] = f"{spec.analysis.criteria.min_precision_ratio:g}"
        ref = status.ramp.champion_version if status.ramp else None
        if role == "challenger" and version and ref and spec.analysis.judgement.sequential("precisionRatio"):
            # the champion's model beside the candidate, on the same feature rows: paired precision evidence
            env["QR_REFERENCE_MODEL_URI"] = f"models:/{spec.model.name}/{ref}"
        if band is not None:
            env["QR_EVIDENCE_PNL_BAND"] = f"{band:g}"
        if spec.trader.entry_threshold is not None:
            env["QR_ENTRY_THRESHOLD"] = f"{spec.trader.entry_threshold:g}"
        env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
        env_list.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        if redis_user:
            env_list += redisacl.trader_env(name)
        if d.mlflow_secret is not None:
            env_list += d.mlflow_secret.env()
        if d.allow_pickle_models:
            env_list.append({"name": "QR_ALLOW_PICKLE_MODELS", "value": "true"})
        if d.log_format != "text":
            env_list.append({"name": "QR_LOG_FORMAT", "value": d.log_format})
        env_list += market_data_secret_env(spec)
        env_list += broker_secret_env(spec, role, paper)
        env_list += [{"name": e.name, "value": e.value} for e in spec.trader.env]
        probe = {"httpGet": {"path": "/readyz", "port": TRADER_PORT}, "periodSeconds": 2, "failureThreshold": 3}
        scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(TRADER_PORT), "prometheus.io/path": "/metrics"} \
            if d.scrape_annotations else {}
        if isinstance(redis_user, str) and redis_user:
            scrape = {**scrape, redisacl.KEY_FINGERPRINT_ANNOTATION: redis_user}
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": deployment_name(name, role), "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    # One trader per book: never two pods trading the same capital at once.
                    "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": {"quantramp.io/strategy": name, "quantramp.io/role": role}},
                    "template": {
                        "metadata": {"labels": {**labels, "quantramp.io/stage": stage}, "annotations": scrape},
                        "spec": _pod_spec(d, {
                            "name": "trader",
                            "image": spec.trader.image or d.image,
                            "imagePullPolicy": d.image_pull_policy,
                            "command": list(spec.trader.command),
                            "env": env_list,
                            "ports": [{"name": "metrics", "containerPort": TRADER_PORT}],
                            "readinessProbe": probe,
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": TRADER_PORT}},
                        }),
                    },
                },
            }
        )
    return out


#: container waiting reasons that will not clear by themselves: a human (or a spec change) must act
STUCK_REASONS = frozenset({"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError", "ErrImagePull",
                           "ImagePullBackOff", "InvalidImageName", "RunContainerError"})


def pod_problem(pods: list[dict[str, Any]]) -> str:
    """Why a role's trader pods are not running, from their raw JSON (``status.containerStatuses``), or "".

    The first container stuck in one of :data:`STUCK_REASONS`, with the kubelet's message (e.g. a missing Secret)
    and, after a crash, the exit code and the message the trader left in its termination log (its "refusing to
    trade: ..." line: a bar source without the symbol, a model that will not load), cut to 600 characters; else
    a container that exited with a non-zero code. Shown in the TradersReady condition."""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state, last = cs.get("state") or {}, (cs.get("lastState") or {}).get("terminated") or {}
            waiting, ended = state.get("waiting") or {}, state.get("terminated") or {}
            parts: list[str] = []
            if waiting.get("reason") in STUCK_REASONS:
                parts.append(waiting["reason"])
                if waiting.get("message") and waiting["reason"] != "CrashLoopBackOff":
                    parts.append(waiting["message"])
            elif ended.get("exitCode"):
                last = ended
            else:
                continue
            if last.get("exitCode"):
                parts.append(f"exit {last['exitCode']}" + (f": {last['message'].strip()}" if (last.get("message") or "").strip() else ""))
            return "; ".join(parts)[:600]
    return ""


#: libpq's password variable: the trader's market data database password (from a Secret, by secretKeyRef)
PGPASSWORD_ENV = "PGPASSWORD"


def market_data_env(spec: TradingStrategySpec) -> dict[str, str]:
    """The trader's bar source as plain env (``quantramp.trader.barsource`` reads it): ``QR_BARS_SOURCE``, and
    ``QR_BARS_URL`` (file) or ``QR_BARS_POSTGRES_DSN`` and ``QR_BARS_TABLE`` (postgres), and ``QR_BAR_SECONDS`` for
    bars other than minute bars. Empty for the bundled
    sample (the trader's default), so a strategy without ``spec.marketData`` renders the env it always did and an
    upgrade of the operator changes no Deployment."""
    md = spec.market_data
    if md.source == "sample":
        return {}
    env = {"QR_BARS_SOURCE": md.source}
    if md.follow:
        env["QR_BARS_FOLLOW"] = "true"
    if md.source == "file" and md.url is not None:
        env["QR_BARS_URL"] = md.url
    if md.source == "postgres" and md.postgres is not None and md.postgres.dsn is not None:
        env["QR_BARS_POSTGRES_DSN"] = md.postgres.dsn
        env["QR_BARS_TABLE"] = md.postgres.table
    if md.bar_seconds != 60:
        env["QR_BAR_SECONDS"] = str(md.bar_seconds)
    return env


def market_data_secret_env(spec: TradingStrategySpec) -> list[dict[str, Any]]:
    """``PGPASSWORD`` by ``valueFrom.secretKeyRef`` to ``spec.marketData.postgres.passwordSecretKeyRef``: the kubelet
    reads the Secret, the operator never does (it has no Secret read permission) and the password is never a plain
    value in the Deployment. Empty unless the source is postgres with a password Secret."""
    md = spec.market_data
    ref = md.postgres.password_secret_key_ref if md.source == "postgres" and md.postgres is not None else None
    if ref is None:
        return []
    return [{"name": PGPASSWORD_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _uses_ib(spec: TradingStrategySpec, paper: bool) -> bool:
    """True if this pod trades at IB: ``spec.broker.type`` ib, except a paper pod against a live account
    (the paper stages keep the simulated broker: no shadow order ever reaches real money)."""
    ib = spec.broker.ib
    return spec.broker.type == "ib" and ib is not None and not (paper and ib.mode == "live")


def broker_env(spec: TradingStrategySpec, role: str, paper: bool) -> dict[str, str]:
    """The pod's broker as plain env (``quantramp.trader.ib.IBConfig.from_env``): ``QR_BROKER=ib`` and ``IB_HOST``,
    ``IB_PORT`` (when set), ``IB_APP``, ``IB_MODE``, ``IB_CLIENT_ID`` (the champion's ``clientId``, the challenger's
    ``clientId + 1``). A paper pod against a live account keeps the simulated broker, but still gets ``IB_*`` when
    its bars are IB's (``marketData.source: ib``: the feed reads them over a read-only connection). Empty for the
    simulated broker on other bars (the trader's default), so a strategy without ``spec.broker`` renders the env it
    always did."""
    ib = spec.broker.ib
    orders, bars = _uses_ib(spec, paper), spec.market_data.source == "ib"
    if ib is None or not (orders or bars):
        return {}
    env = {"QR_BROKER": "ib"} if orders else {}
    env.update({"IB_HOST": ib.host, "IB_APP": ib.app, "IB_MODE": ib.mode,
                "IB_CLIENT_ID": str(ib.client_id + (1 if role == "challenger" else 0))})
    if ib.port is not None:
        env["IB_PORT"] = str(ib.port)
    return env


def broker_secret_env(spec: TradingStrategySpec, role: str, paper: bool) -> list[dict[str, Any]]:
    """``IB_ACCOUNT`` by ``valueFrom.secretKeyRef`` to the role's account Secret of ``spec.broker.ib`` (read by the
    kubelet, never by the operator). Empty unless the pod talks to IB."""
    ib = spec.broker.ib
    if ib is None or not (_uses_ib(spec, paper) or spec.market_data.source == "ib"):
        return []
    ref = ib.champion_account_secret_key_ref if role == "champion" else ib.challenger_account_secret_key_ref
    return [{"name": "IB_ACCOUNT", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def _pod_spec(d: TraderDefaults, container: dict[str, Any]) -> dict[str, Any]:
    """The trader pod spec around ``container`` with the platform's defaults ``d``; empty settings are
    left out, so that a server-side apply removes them from the Deployment."""
    resources = {k: v for k, v in d.resources.model_dump().items() if v}
    container = {**container, "resources": resources, "securityContext": d.security_context,
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}
    pod: dict[str, Any] = {
        "containers": [{k: v for k, v in container.items() if v not in ({}, None)}],
        "securityContext": d.pod_security_context,
        "serviceAccountName": d.service_account_name,
        "automountServiceAccountToken": False,
        "imagePullSecrets": [r.model_dump() for r in d.image_pull_secrets],
        "nodeSelector": d.node_selector,
        "tolerations": d.tolerations,
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 10,
    }
    return {k: v for k, v in pod.items() if v not in ({}, [], "")}


def without_credentials(url: str) -> str:
    """``url`` without its userinfo (``redis://user:pw@host:6379/0`` -> ``redis://host:6379/0``). Pure."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def pod_env_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Env the operator passes to every trader pod, from ``environ`` (default its own environment).

    ``QR_POD_MLFLOW_TRACKING_URI`` (else ``MLFLOW_TRACKING_URI``) and ``QR_POD_REDIS_URL``
    (else ``REDIS_URL``): the addresses as seen from inside a pod, with any credentials in them
    removed (:func:`without_credentials`): pods get theirs from Secrets, never from the operator's env.
    """
    e = os.environ if environ is None else environ
    env = {}
    mlflow = e.get("QR_POD_MLFLOW_TRACKING_URI") or e.get("MLFLOW_TRACKING_URI")
    if mlflow:
        env["MLFLOW_TRACKING_URI"] = without_credentials(mlflow)
    redis = e.get("QR_POD_REDIS_URL") or e.get("REDIS_URL")
    if redis:
        env["REDIS_URL"] = without_credentials(redis)
    return env


def manifests_hash(manifests: list[dict[str, Any]]) -> str:
    """A stable hash of rendered manifests (``status.appliedHash``): apply again only when it changes."""
    return hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()[:16]


#: the field manager of the operator's server-side applies
FIELD_MANAGER = "quantramp"


def apply_deployments(api: Any, owner: dict[str, Any], manifests: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Server-side apply each Deployment (field manager :data:`FIELD_MANAGER`, conflicts forced) with a
    controller owner reference to ``owner`` (the strategy body).

    ``api`` is a ``kubernetes.client.AppsV1Api``. Idempotent; fields the operator no longer
    renders (an env entry removed from ``spec.trader.env``) are removed, and manual drift of
    the fields it owns (replicas, image, env) is overwritten. Returns the applied Deployments
    as ``(name, generation)`` pairs (the response is not deserialised into client models: at
    hundreds of strategies that churn dominated the operator's memory). Raises
    ``kubernetes.client.ApiException`` on API errors.
    """
    out = []
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for manifest in manifests:
        body = json.loads(json.dumps(manifest))
        body["metadata"]["ownerReferences"] = [ref]
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        resp = api.patch_namespaced_deployment(
            name, ns, body, field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml",
            _preload_content=False,
        )
        meta = json.loads(resp.data)["metadata"]
        out.append((meta["name"], meta["generation"]))
    return out
