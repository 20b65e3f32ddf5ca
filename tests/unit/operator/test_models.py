"""Spec validation in Python and the generated CRD."""

import pytest
from pydantic import ValidationError

from quantramp.operator import crdgen
from quantramp.operator.models import TradingStrategySpec, parse_duration


def base(**kw):
    raw = {"model": {"name": "m", "version": "3"}, "capitalUsd": 5e4}
    raw.update(kw)
    return raw


def test_defaults_are_the_seed_table():
    spec = TradingStrategySpec.model_validate(base())
    table = [(s.name, s.capital_percent, s.dwell, s.max_drawdown, s.pnl_band) for s in spec.stages]
    assert table == [
        ("shadow", 0, "30d", None, None),
        ("canary-1", 1, "7d", 0.02, 0.10),
        ("canary-2", 5, "14d", 0.03, 0.10),
        ("production", 100, "0s", 0.10, 0.15),
    ]


@pytest.mark.parametrize("text,seconds", [("45s", 45), ("1.5h", 5400), ("30d", 2_592_000), ("0s", 0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["-5s", "5", "", "5w", "s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_non_increasing_stages_rejected():
    with pytest.raises(ValidationError, match="strictly increasing"):
        TradingStrategySpec.model_validate(
            base(stages=[{"name": "a", "capitalPercent": 5}, {"name": "b", "capitalPercent": 5}])
        )


@pytest.mark.parametrize("path", [crdgen.CRD_PATH, crdgen.CHART_CRD_PATH], ids=["crds", "chart"])
def test_crd_is_up_to_date(path):
    assert path.read_text() == crdgen.render(), "run `python -m quantramp.operator.crdgen`"


def test_crd_schema_is_structural():
    schema = crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node, path):
        assert "$ref" not in node and "anyOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for k, v in node.get("properties", {}).items():
            walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")


def test_no_field_name_is_a_yaml_1_1_boolean():
    """kubectl reads the CRD with YAML 1.1 rules, where a bare key n, y, on, off, yes or no is a boolean:
    a status field named `n` became a schema property `false`, its default 0 was written under that key,
    and every later status read failed (found by `make demo`)."""
    import yaml

    booleans = {"y", "n", "yes", "no", "on", "off", "true", "false"}
    schema = crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    bad = []

    def walk(node, path):
        for k, v in node.get("properties", {}).items():
            if k.lower() in booleans:
                bad.append(f"{path}.{k}")
            walk(v, f"{path}.{k}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + "{}")

    walk(schema, "")
    assert not bad, bad
    assert yaml.safe_load(crdgen.render())  # and the file itself still parses


@pytest.mark.parametrize("name", ["MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_USERNAME", "QR_REDIS_PASSWORD"])
def test_a_strategy_cannot_carry_credentials_in_its_trader_env(name):
    """Credentials come from Secrets the operator references, never inline in a TradingStrategy."""
    with pytest.raises(ValidationError, match="set by the operator"):
        TradingStrategySpec.model_validate(base(trader={"env": [{"name": name, "value": "hunter2"}]}))
    rule = crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["trader"][
        "properties"]["env"]["items"]["properties"]["name"]["x-kubernetes-validations"][0]["rule"]
    assert name.startswith("QR_") or f"'{name}'" in rule
