"""Registry.version_run_metrics against a stubbed HTTP session (the integration test uses MLflow)."""

from __future__ import annotations

import json
import math

import pytest
import requests

from quantramp.operator.registry import Registry, RegistryError


class Session:
    """Answers GET model-versions/get and runs/get from dicts, recording the calls."""

    def __init__(self, versions: dict, runs: dict):
        self.versions, self.runs, self.calls = versions, runs, []

    def request(self, method, url, timeout=None, params=None, **kw):
        self.calls.append((method, url.rsplit("/mlflow/", 1)[1], params))
        r = requests.Response()
        if url.endswith("model-versions/get"):
            body = self.versions.get((params["name"], params["version"]))
            key = "model_version"
        else:
            body = self.runs.get(params["run_id"])
            key = "run"
        if body is None:
            r.status_code = 404
            r._content = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "nope"}).encode()
        else:
            r.status_code = 200
            r._content = json.dumps({key: body}).encode()
        return r


def registry(session) -> Registry:
    reg = Registry("http://mlflow.invalid:5000")
    reg.session = session
    return reg


def test_metrics_of_the_versions_run():
    metrics = [
        {"key": "wf_sharpe", "value": 0.144, "timestamp": 1, "step": 0},
        {"key": "pbo", "value": 0.0, "timestamp": 1, "step": 0},
        {"key": "dsr", "value": "NaN", "timestamp": 1, "step": 0},  # protobuf JSON's NaN
        {"key": "wf_kurtosis", "value": "Infinity", "timestamp": 1, "step": 0},
    ]
    s = Session({("m", "3"): {"name": "m", "version": "3", "run_id": "r1"}}, {"r1": {"data": {"metrics": metrics}}})
    out = registry(s).version_run_metrics("m", 3)
    assert out["wf_sharpe"] == 0.144 and out["pbo"] == 0.0
    assert math.isnan(out["dsr"]) and out["wf_kurtosis"] == math.inf
    assert s.calls == [
        ("GET", "model-versions/get", {"name": "m", "version": "3"}),
        ("GET", "runs/get", {"run_id": "r1"}),
    ]


@pytest.mark.parametrize("mv", [{"name": "m", "version": "1"}, {"name": "m", "version": "1", "run_id": ""}])
def test_a_version_without_a_run_has_no_metrics(mv):
    s = Session({("m", "1"): mv}, {})
    assert registry(s).version_run_metrics("m", "1") == {}
    assert len(s.calls) == 1


def test_a_run_without_metrics_and_a_missing_run():
    s = Session(
        {("m", "1"): {"run_id": "r1"}, ("m", "2"): {"run_id": "gone"}},
        {"r1": {"info": {}, "data": {}}},
    )
    assert registry(s).version_run_metrics("m", "1") == {}
    with pytest.raises(RegistryError) as err:
        registry(s).version_run_metrics("m", "2")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
