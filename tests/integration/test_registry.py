"""The MLflow registry adapter against the real MLflow server of the local stack."""

from __future__ import annotations

import math
import uuid

import pytest
from mlflow.tracking import MlflowClient

from quantramp.operator.registry import Registry, RegistryError

pytestmark = pytest.mark.integration


@pytest.fixture()
def model(stack):
    """A registered model with two versions whose sources are a real run's artifacts."""
    client = MlflowClient(stack.env["MLFLOW_TRACKING_URI"])
    name = f"it-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    client.log_text(run.info.run_id, "placeholder", "model/MLmodel")
    for _ in range(2):
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    return name


def test_alias_unset_is_none_then_moves(stack, model):
    reg = Registry(stack.env["MLFLOW_TRACKING_URI"])
    assert reg.alias_version(model, "champion") is None
    reg.set_alias(model, "champion", "1")
    reg.set_alias(model, "champion", "1")  # idempotent
    assert reg.alias_version(model, "champion") == "1"
    reg.set_alias(model, "champion", "2")
    reg.set_alias(model, "challenger", "1")
    assert reg.aliases(model) == {"champion": "2", "challenger": "1"}
    reg.remove_alias(model, "challenger")
    reg.remove_alias(model, "challenger")  # idempotent
    assert reg.aliases(model) == {"champion": "2"}


def test_tags_are_set_once(stack, model):
    reg = Registry(stack.env["MLFLOW_TRACKING_URI"])
    reg.tag_version(model, "2", {"quantramp.status": "rejected", "quantramp.rejected_reason": "drawdown"})
    reg.tag_version(model, "2", {"quantramp.status": "rejected"})
    tags = MlflowClient(stack.env["MLFLOW_TRACKING_URI"]).get_model_version(model, "2").tags
    assert tags["quantramp.status"] == "rejected" and tags["quantramp.rejected_reason"] == "drawdown"


def test_missing_version_raises(stack, model):
    with pytest.raises(RegistryError) as err:
        Registry(stack.env["MLFLOW_TRACKING_URI"]).check_version(model, "99")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_version_run_metrics(stack):
    """A version's run metrics (the admission evidence) as {key: latest value}; {} without a run."""
    uri = stack.env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(uri)
    name = f"it-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    run = client.create_run(client.get_experiment_by_name("Default").experiment_id)
    rid = run.info.run_id
    client.log_text(rid, "placeholder", "model/MLmodel")
    client.log_metric(rid, "wf_sharpe", 0.2, step=0)
    client.log_metric(rid, "wf_sharpe", 0.144, step=1)  # the latest value is the one reported
    client.log_metric(rid, "dsr", 0.3)
    client.log_metric(rid, "pbo", 0.0)  # a zero survives the JSON round trip
    client.log_metric(rid, "trials", 16)
    client.log_metric(rid, "wf_skew", float("nan"))
    client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=rid)
    client.create_model_version(name, source="s3://quantramp-it/elsewhere/model")  # no run (a source outside any run)

    reg = Registry(uri)
    metrics = reg.version_run_metrics(name, "1")
    assert {k: v for k, v in metrics.items() if k != "wf_skew"} == {
        "wf_sharpe": 0.144, "dsr": 0.3, "pbo": 0.0, "trials": 16.0,
    }
    assert math.isnan(metrics["wf_skew"])
    assert reg.version_run_metrics(name, "2") == {}
    with pytest.raises(RegistryError) as err:
        reg.version_run_metrics(name, "99")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"

    from quantramp.operator.admission import check

    verdict = check(metrics)
    assert not verdict.admitted and len(verdict.reasons) == 2  # wf_sharpe and dsr; pbo 0.0 passes


def test_an_unreachable_registry_raises_unavailable():
    with pytest.raises(RegistryError) as err:
        Registry("http://127.0.0.1:1", timeout=1).alias_version("m", "champion")
    assert err.value.error_code == "UNAVAILABLE"


def test_the_operator_does_not_import_the_mlflow_client():
    import subprocess
    import sys

    code = "import sys, quantramp.operator.handlers; print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
