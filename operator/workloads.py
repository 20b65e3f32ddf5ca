"""Champion and challenger trader Deployments: rendered from (spec, status), applied idempotently.

:func:`render_deployments` is pure; :func:`apply_deployments` creates or patches them through
the Kubernetes API with an owner reference to the TradingStrategy, so deleting the strategy
deletes its Deployments through the garbage collector.

Capital split (DESIGN.md "Flow of one ramp"): the challenger trades ``stage %`` of the
strategy capital, the champion ``100 − stage %``.  At 0% (shadow) the challenger paper-trades
the full strategy capital.  After a rollback the challenger is scaled to zero; after
promotion the champion Deployment runs the promoted version at 100%.
"""

from __future__ import annotations

import os
from typing import Any

from .models import TradingStrategySpec, TradingStrategyStatus

TRADER_PORT = 8080
ROLES = ("champion", "challenger")


def deployment_name(strategy: str, role: str) -> str:
    """Name of the Deployment of ``role`` (champion|challenger) for ``strategy``."""
    return f"{strategy}-{role}"


def _allocation(spec: TradingStrategySpec, status: TradingStrategyStatus, role: str) -> tuple[int, str | None, float, bool]:
    """(replicas, model version, capital USD, paper) for ``role``."""
    pct = status.capital_percent or 0.0
    if role == "champion":
        if status.phase == "Promoted":
            return 1, spec.model.version, spec.capital_usd, False
        if status.champion_version is None:
            return 0, None, 0.0, False
        capital = spec.capital_usd * (100.0 - pct) / 100.0
        return (1 if capital > 0 else 0), status.champion_version, capital, False
    if status.phase != "Progressing":
        return 0, spec.model.version, 0.0, False
    if pct == 0:
        return 1, spec.model.version, spec.capital_usd, True
    return 1, spec.model.version, spec.capital_usd * pct / 100.0, False


def render_deployments(
    name: str,
    namespace: str,
    spec: TradingStrategySpec,
    status: TradingStrategyStatus,
    pod_env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Return the two Deployment manifests (champion, challenger) as dicts.

    ``pod_env`` adds environment shared by every trader pod (e.g. MLFLOW_TRACKING_URI,
    REDIS_URL as the pods should see them).  Owner references are added by the caller.
    """
    out = []
    for role in ROLES:
        replicas, version, capital, paper = _allocation(spec, status, role)
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
            "QR_STAGE": status.stage or "",
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
        if spec.trader.entry_threshold is not None:
            env["QR_ENTRY_THRESHOLD"] = f"{spec.trader.entry_threshold:g}"
        env_list: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in env.items()]
        env_list.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
        env_list += spec.trader.env
        probe = {"httpGet": {"path": "/readyz", "port": TRADER_PORT}, "periodSeconds": 2, "failureThreshold": 3}
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
                        "metadata": {
                            "labels": {**labels, "quantramp.io/stage": status.stage or ""},
                            "annotations": {
                                "prometheus.io/scrape": "true",
                                "prometheus.io/port": str(TRADER_PORT),
                                "prometheus.io/path": "/metrics",
                            },
                        },
                        "spec": {
                            "containers": [
                                {
                                    "name": "trader",
                                    "image": spec.trader.image,
                                    "command": list(spec.trader.command),
                                    "env": env_list,
                                    "ports": [{"name": "metrics", "containerPort": TRADER_PORT}],
                                    "readinessProbe": probe,
                                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": TRADER_PORT}},
                                    "resources": {
                                        "requests": {"cpu": "100m", "memory": "256Mi"},
                                        "limits": {"memory": "512Mi"},
                                    },
                                }
                            ],
                            "terminationGracePeriodSeconds": 10,
                        },
                    },
                },
            }
        )
    return out


def pod_env_from_environment() -> dict[str, str]:
    """Env the operator passes to every trader pod, from its own environment.

    ``QR_POD_MLFLOW_TRACKING_URI`` (else ``MLFLOW_TRACKING_URI``) and ``QR_POD_REDIS_URL``
    (else ``REDIS_URL``): the addresses as seen from inside a pod.
    """
    env = {}
    mlflow = os.environ.get("QR_POD_MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if mlflow:
        env["MLFLOW_TRACKING_URI"] = mlflow
    redis = os.environ.get("QR_POD_REDIS_URL") or os.environ.get("REDIS_URL")
    if redis:
        env["REDIS_URL"] = redis
    return env


def apply_deployments(api: Any, owner: dict[str, Any], manifests: list[dict[str, Any]]) -> None:
    """Create or patch each Deployment with an owner reference to ``owner`` (the strategy body).

    ``api`` is a ``kubernetes.client.AppsV1Api``.  Idempotent: applying the same manifests
    twice changes nothing.  Raises ``kubernetes.client.ApiException`` on API errors other
    than a missing Deployment.
    """
    from kubernetes.client import ApiException

    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for manifest in manifests:
        manifest["metadata"]["ownerReferences"] = [ref]
        ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            api.patch_namespaced_deployment(name, ns, manifest)
        except ApiException as exc:
            if exc.status != 404:
                raise
            api.create_namespaced_deployment(ns, manifest)
