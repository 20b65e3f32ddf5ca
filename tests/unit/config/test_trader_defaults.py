"""The platform's trader pod settings (QR_TRADER_DEFAULTS, rendered by the chart from its trader values):
parsed and checked at operator start, and applied to the champion and challenger Deployments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from quantramp.operator import engine
from quantramp.operator.models import TradingStrategySpec
from quantramp.operator.workloads import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    TRADER_DEFAULTS_ENV,
    TraderDefaults,
    render_deployments,
    trader_defaults_from_environment,
)

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
#: what the chart renders with its default values and image.tag=1.2.3 (templates/deployment.yaml)
CHART_JSON = {
    "image": "registry.example.com/quantramp:1.2.3", "imagePullPolicy": "Always",
    "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}},
    "podSecurityContext": RESTRICTED_POD, "securityContext": RESTRICTED_CONTAINER,
    "serviceAccountName": "trader", "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"pool": "trading"}, "tolerations": [{"key": "trading", "operator": "Exists", "effect": "NoSchedule"}],
    "scrapeAnnotations": False, "allowPickleModels": True, "logFormat": "json",
}


def spec(**trader):
    return TradingStrategySpec.model_validate({
        "model": {"name": "m", "version": "5"}, "capitalUsd": 100_000,
        "risk": {"maxPositionPercent": 40, "maxOrderPercent": 10, "maxDailyLossPercent": 1},
        "trader": trader,
    })


def pods(s, defaults=None):
    st = engine.start(s, None, engine.StartFacts(True, "4"), T0, "NewStrategy", 1).status
    engine._allocate(st)
    return [d["spec"]["template"] for d in render_deployments("s", "ns", s, st, defaults=defaults)]


def test_unset_means_restricted_pods_and_the_dev_image():
    d = trader_defaults_from_environment({})
    assert d == TraderDefaults() and d.image == "quantramp:dev"
    for tpl in pods(spec()):
        pod, c = tpl["spec"], tpl["spec"]["containers"][0]
        assert pod["securityContext"] == RESTRICTED_POD and c["securityContext"] == RESTRICTED_CONTAINER
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"} and pod["securityContext"]["runAsNonRoot"]
        # the only writable path, and no API token (traders never call the API server)
        assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}] and pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
        assert pod["automountServiceAccountToken"] is False
        assert c["image"] == "quantramp:dev" and tpl["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert not {"serviceAccountName", "imagePullSecrets", "nodeSelector", "tolerations"} & set(pod)
        assert "QR_ALLOW_PICKLE_MODELS" not in {e["name"] for e in c["env"]}  # only skops models load
        assert "QR_LOG_FORMAT" not in {e["name"] for e in c["env"]}  # text lines


def test_the_charts_settings_reach_every_trader_pod():
    d = trader_defaults_from_environment({TRADER_DEFAULTS_ENV: json.dumps(CHART_JSON)})
    for tpl in pods(spec(), d):
        pod, c = tpl["spec"], tpl["spec"]["containers"][0]
        assert (c["image"], c["imagePullPolicy"]) == ("registry.example.com/quantramp:1.2.3", "Always")
        assert c["resources"] == CHART_JSON["resources"]
        assert pod["serviceAccountName"] == "trader" and pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["nodeSelector"] == {"pool": "trading"} and pod["tolerations"] == CHART_JSON["tolerations"]
        assert "annotations" not in tpl["metadata"] or not tpl["metadata"]["annotations"]  # a PodMonitor scrapes them
        assert {"name": "QR_ALLOW_PICKLE_MODELS", "value": "true"} in c["env"]
        assert {"name": "QR_LOG_FORMAT", "value": "json"} in c["env"]


def test_a_strategys_own_image_wins_over_the_platform_default():
    d = TraderDefaults(image="registry.example.com/quantramp:1.2.3")
    assert {tpl["spec"]["containers"][0]["image"] for tpl in pods(spec(image="custom:7"), d)} == {"custom:7"}
    assert {tpl["spec"]["containers"][0]["image"] for tpl in pods(spec(), d)} == {"registry.example.com/quantramp:1.2.3"}


def test_empty_security_contexts_are_left_out_not_rendered_empty():
    d = TraderDefaults(pod_security_context={}, security_context={}, resources={})
    tpl = pods(spec(), d)[0]
    assert "securityContext" not in tpl["spec"] and not {"securityContext", "resources"} & set(tpl["spec"]["containers"][0])


@pytest.mark.parametrize("raw,where", [
    ("{not json", "Invalid JSON"),
    (json.dumps({"imagePullPolicy": "Sometimes"}), "imagePullPolicy"),
    (json.dumps({"image": "quantramp dev"}), "image"),
    (json.dumps({"imagePullSecret": [{"name": "x"}]}), "imagePullSecret"),  # a typo: unknown key
    (json.dumps({"imagePullSecrets": ["regcred"]}), "imagePullSecrets.0"),
    (json.dumps({"serviceAccountName": "Trader_SA"}), "serviceAccountName"),
    (json.dumps({"nodeSelector": {"pool": 3}}), "nodeSelector.pool"),
])
def test_a_bad_value_is_refused_naming_the_variable_and_the_field(raw, where):
    with pytest.raises(ValueError) as err:
        trader_defaults_from_environment({TRADER_DEFAULTS_ENV: raw})
    assert TRADER_DEFAULTS_ENV in str(err.value) and where in str(err.value)


def test_the_operator_exits_at_start_on_a_bad_value():
    env = {**os.environ, TRADER_DEFAULTS_ENV: json.dumps({"imagePullPolicy": "Sometimes"})}
    out = subprocess.run([sys.executable, "-m", "quantramp.operator"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert f"quantramp-operator: {TRADER_DEFAULTS_ENV} is invalid: imagePullPolicy" in out.stderr
