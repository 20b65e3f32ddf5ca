"""The API server itself rejects malformed TradingStrategies with a message that says what to fix."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.e2e


def manifest(**spec_overrides):
    spec = {"model": {"name": "m", "version": "1"}, "capitalUsd": 1000}
    spec.update(spec_overrides)
    for key, value in list(spec.items()):
        if value is None:
            del spec[key]
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": "bad"}, "spec": spec}


CASES = {
    "capital percent above 100": (
        manifest(stages=[{"name": "a", "capitalPercent": 0}, {"name": "b", "capitalPercent": 150}]),
        "spec.stages[1].capitalPercent: Invalid value: 150: spec.stages[1].capitalPercent in body should be less than or equal to 100",
    ),
    "capital percent below 0": (
        manifest(stages=[{"name": "a", "capitalPercent": -1}, {"name": "b", "capitalPercent": 5}]),
        "should be greater than or equal to 0",
    ),
    "capital not increasing": (
        manifest(stages=[{"name": "a", "capitalPercent": 5}, {"name": "b", "capitalPercent": 1}]),
        "stages must have strictly increasing capitalPercent",
    ),
    "missing model name": (manifest(model={"version": "1"}), "spec.model.name: Required value"),
    "negative dwell": (
        manifest(stages=[{"name": "a", "capitalPercent": 0, "dwell": "-5s"}, {"name": "b", "capitalPercent": 5}]),
        "dwell must be a non-negative duration",
    ),
    "missing capital": (manifest(capitalUsd=None), "spec.capitalUsd: Required value"),
    "duplicate stage names": (
        manifest(stages=[{"name": "a", "capitalPercent": 0}, {"name": "a", "capitalPercent": 5}]),
        "stage names must be unique",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_manifest_is_rejected(stack, case):
    stack.install_crd()
    body, expected = CASES[case]
    out = stack.kubectl("apply", "-f", "-", check=False, stdin=yaml.safe_dump(body))
    assert out.returncode != 0, out.stdout
    assert expected in out.stderr, out.stderr
    assert stack.kubectl("get", "tradingstrategy", "bad", check=False).returncode != 0


def test_minimal_manifest_gets_the_seed_defaults(stack):
    stack.install_crd()
    body = manifest()
    body["metadata"] = {"name": "defaults", "namespace": "admission"}
    stack.kubectl("create", "namespace", "admission", check=False)
    out = stack.kubectl("apply", "--dry-run=server", "-o", "yaml", "-f", "-", stdin=yaml.safe_dump(body))
    spec = yaml.safe_load(out.stdout)["spec"]
    assert [s["name"] for s in spec["stages"]] == ["shadow", "canary-1", "canary-2", "production"]
    assert [s["dwell"] for s in spec["stages"]] == ["30d", "7d", "14d", "0s"]
    assert spec["analysis"]["criteria"]["minFillRatio"] == 0.95
