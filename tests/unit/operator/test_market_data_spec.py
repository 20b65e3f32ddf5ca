"""spec.marketData and spec.symbols: the generated CRD's rules and the pydantic models agree.

The CRD side is evaluated here as the API server would on a create: structural defaults applied, then the
OpenAPI keywords the schema uses (type, enum, required, unknown fields, lengths, item counts, list-type set)
and every ``x-kubernetes-validations`` rule with cel-python (the project's CEL library, as in
tests/unit/config/test_chart_admission_policy.py). The API server's own CEL (cel-go) runs the same rules
in tests/e2e/test_admission.py."""

from __future__ import annotations

import copy
import re

import pytest
from pydantic import ValidationError

from quantramp.operator import crdgen, models
from quantramp.operator.models import TradingStrategySpec

celpy = pytest.importorskip("celpy")
from celpy import celtypes  # noqa: E402

CEL = celpy.Environment()
#: Kubernetes' CEL list library, missing from cel-python
FUNCTIONS = {"isSorted": lambda lst: celtypes.BoolType(list(lst) == sorted(lst))}
_PROGRAMS: dict[str, object] = {}


def spec_schema() -> dict:
    return crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


SCHEMA = spec_schema()


def defaulted(node: dict, value):
    """``value`` with the schema's defaults applied (structural defaulting), and ``number`` fields as doubles
    (as the API server's CEL types them: 100 in a number field compares equal to 100.0)."""
    if node.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if node.get("type") == "object" and isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = defaulted(sub, value[key])
    elif node.get("type") == "array" and isinstance(value, list) and isinstance(node.get("items"), dict):
        value = [defaulted(node["items"], v) for v in value]
    return value


_TYPES = {"string": str, "boolean": bool, "object": dict, "array": list}


def crd_errors(node: dict, value, path: str = "spec") -> list[str]:
    """The API server's refusals of ``value`` under schema ``node`` (a create: rules with oldSelf are skipped)."""
    if value is None:
        return [] if node.get("nullable") else [f"{path}: must not be null"]
    t = node.get("type")
    if t in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{path}: must be of type {t}"]
    elif t in _TYPES and not isinstance(value, _TYPES[t]):
        return [f"{path}: must be of type {t}"]
    out: list[str] = []
    if "enum" in node and value not in node["enum"]:
        out.append(f"{path}: Unsupported value: {value!r}")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            out.append(f"{path}: should be at least {node['minLength']} chars long")
        if "maxLength" in node and len(value) > node["maxLength"]:
            out.append(f"{path}: Too long: may not be more than {node['maxLength']} bytes")
        if "pattern" in node and not re.search(node["pattern"], value):
            out.append(f"{path}: should match '{node['pattern']}'")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in node and (value <= node["minimum"] if node.get("exclusiveMinimum") else value < node["minimum"]):
            out.append(f"{path}: should be greater than {node['minimum']}")
        if "maximum" in node and (value >= node["maximum"] if node.get("exclusiveMaximum") else value > node["maximum"]):
            out.append(f"{path}: should be less than {node['maximum']}")
    if isinstance(value, list):
        if len(value) < node.get("minItems", 0):
            out.append(f"{path}: should have at least {node['minItems']} items")
        if "maxItems" in node and len(value) > node["maxItems"]:
            out.append(f"{path}: must have at most {node['maxItems']} items")
        if node.get("x-kubernetes-list-type") == "set" and len(set(map(repr, value))) != len(value):
            out.append(f"{path}: Duplicate value")
        for i, item in enumerate(value):
            out += crd_errors(node.get("items", {}), item, f"{path}[{i}]")
    if isinstance(value, dict) and isinstance(node.get("additionalProperties"), dict):
        if "maxProperties" in node and len(value) > node["maxProperties"]:
            out.append(f"{path}: must have at most {node['maxProperties']} items")
        for key, item in value.items():
            out += crd_errors(node["additionalProperties"], item, f"{path}[{key}]")
    if isinstance(value, dict) and "properties" in node:
        for key in node.get("required", []):
            if key not in value:
                out.append(f"{path}.{key}: Required value")
        for key, item in value.items():
            if key not in node["properties"]:
                out.append(f'{path}: unknown field "{path}.{key}"')
            else:
                out += crd_errors(node["properties"][key], item, f"{path}.{key}")
    for rule in node.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue
        if rule["rule"] not in _PROGRAMS:
            _PROGRAMS[rule["rule"]] = CEL.program(CEL.compile(rule["rule"]), functions=FUNCTIONS)
        try:
            ok = bool(_PROGRAMS[rule["rule"]].evaluate({"self": celpy.json_to_cel(value)}))
        except celpy.CELEvalError as exc:
            out.append(f"{path}: rule error {exc}")
            continue
        if not ok:
            out.append(f"{path}: Invalid value: {rule['message']}")
    return out


def admit(spec: dict) -> list[str]:
    """What the API server says to ``spec`` on create ([]: admitted)."""
    return crd_errors(SCHEMA, defaulted(SCHEMA, copy.deepcopy(spec)))


def operator_errors(spec: dict) -> str:
    """What the operator's models say ('': valid)."""
    try:
        TradingStrategySpec.model_validate(spec)
    except ValidationError as exc:
        return str(exc)
    return ""


def base(**kw) -> dict:
    raw = {"model": {"name": "m", "version": "3"}, "capitalUsd": 5e4}
    raw.update(kw)
    return raw


DSN = "postgresql://quantramp@db.trading:5432/market"
PG = {"source": "postgres", "postgres": {"dsn": DSN}}
FILE = {"source": "file", "url": "/data/bars/{symbol}.parquet"}

GOOD = {
    "no marketData: the sample, AAPL": base(),
    "empty marketData: the sample": base(marketData={}),
    "explicit sample": base(marketData={"source": "sample"}, symbols=["AAPL"]),
    "file with a {symbol} path": base(marketData=FILE, symbols=["MSFT"]),
    "file with an https url and a user without password": base(
        marketData={"source": "file", "url": "https://reader@data.example.com/bars/{symbol}.csv"}, symbols=["BRK.B"]),
    "file with a fixed path": base(marketData={"source": "file", "url": "bars.csv"}, symbols=["SPY"]),
    "postgres with the default table": base(marketData=PG, symbols=["IBM"]),
    "postgres with everything": base(marketData={"source": "postgres", "postgres": {
        "dsn": "postgres://quantramp@db:5432/market?sslmode=require&application_name=qr", "table": "market.minute_bars",
        "passwordSecretKeyRef": {"name": "market-db", "key": "password"}}}, symbols=["GOOG"]),
    "postgres on an IPv6 host": base(marketData={"source": "postgres", "postgres": {"dsn": "postgresql://q@[::1]:5432/m"}}),
    "postgres without a user": base(marketData={"source": "postgres", "postgres": {"dsn": "postgresql://db.trading/market"}}),
    "ten-character symbol": base(marketData=FILE, symbols=["ABCDEFGHIJ"]),
    "symbol with digits": base(marketData=FILE, symbols=["X2"]),
    "two symbols": base(symbols=["MSFT", "AAPL"], marketData=FILE),
    "eight symbols": base(symbols=["A", "B", "C", "D", "E", "F", "G", "H"], marketData=FILE, capitalUsd=1e5),
    "daily bars from a file": base(marketData={**FILE, "barSeconds": 86400}),
    "5-minute bars from postgres": base(marketData={**PG, "barSeconds": 300}),
    "minute bars of the sample, said": base(marketData={"source": "sample", "barSeconds": 60}),
}

SAMPLE = models.SAMPLE_SYMBOLS_MESSAGE
BAD = {
    # source and its settings
    "file without url": (base(marketData={"source": "file"}), "source file needs marketData.url"),
    "postgres without postgres": (base(marketData={"source": "postgres"}), "source postgres needs marketData.postgres.dsn"),
    "postgres without dsn": (base(marketData={"source": "postgres", "postgres": {"table": "bars"}}),
                             "source postgres needs marketData.postgres.dsn"),
    "url with the sample": (base(marketData={"url": "/x.csv"}), "url is read only with source file"),
    "url with postgres": (base(marketData={**PG, "url": "/x.csv"}), "url is read only with source file"),
    "postgres with the sample": (base(marketData={"postgres": {"dsn": DSN}}), "postgres is read only with source postgres"),
    "postgres with file": (base(marketData={**FILE, "postgres": {"dsn": DSN}}), "postgres is read only with source postgres"),
    "unknown source": (base(marketData={"source": "kafka"}), ("Unsupported value", "Input should be 'sample', 'file', 'postgres' or 'ib'")),
    "unknown field": (base(marketData={"source": "sample", "path": "/x"}), ("unknown field", "Extra inputs are not permitted")),
    # the DSN
    "password in the dsn": (base(marketData={"source": "postgres", "postgres": {"dsn": "postgresql://q:hunter2@db/m"}}),
                            "put the password in a Secret and name it in passwordSecretKeyRef"),
    "empty password in the dsn": (base(marketData={"source": "postgres", "postgres": {"dsn": "postgresql://q:@db/m"}}),
                                  "put the password in a Secret"),
    "password parameter in the dsn": (base(marketData={"source": "postgres", "postgres": {
        "dsn": "postgresql://q@db/m?sslmode=require&password=hunter2"}}), "put the password in a Secret"),
    "key=value dsn": (base(marketData={"source": "postgres", "postgres": {"dsn": "host=db user=q dbname=m"}}),
                      "dsn must be a libpq URI"),
    "mysql dsn": (base(marketData={"source": "postgres", "postgres": {"dsn": "mysql://q@db/m"}}), "dsn must be a libpq URI"),
    # the table
    "table with a dash": (base(marketData={**PG, "postgres": {"dsn": DSN, "table": "minute-bars"}}), "table must be a lower-case SQL identifier"),
    "table in capitals": (base(marketData={**PG, "postgres": {"dsn": DSN, "table": "Minute_Bars"}}), "table must be a lower-case SQL identifier"),
    "table with SQL": (base(marketData={**PG, "postgres": {"dsn": DSN, "table": "bars; drop table x"}}), "table must be a lower-case SQL identifier"),
    "table with two dots": (base(marketData={**PG, "postgres": {"dsn": DSN, "table": "a.b.c"}}), "table must be a lower-case SQL identifier"),
    "table starting with a digit": (base(marketData={**PG, "postgres": {"dsn": DSN, "table": "1bars"}}), "table must be a lower-case SQL identifier"),
    # the password Secret
    "secret ref without key": (base(marketData={**PG, "postgres": {"dsn": DSN, "passwordSecretKeyRef": {"name": "db"}}}),
                               ("passwordSecretKeyRef.key: Required value", "Field required")),
    "secret name in capitals": (base(marketData={**PG, "postgres": {"dsn": DSN, "passwordSecretKeyRef": {"name": "Market_DB", "key": "p"}}}),
                                "name must be a Secret name"),
    "secret key with a slash": (base(marketData={**PG, "postgres": {"dsn": DSN, "passwordSecretKeyRef": {"name": "db", "key": "a/b"}}}),
                                "key must be a Secret key"),
    "the strategy's Redis Secret": (base(marketData={**PG, "postgres": {"dsn": DSN, "passwordSecretKeyRef": {
        "name": "s-trader-redis", "key": "password"}}}), "may not name a strategy's Redis Secret"),
    # the url
    "url with another placeholder": (base(marketData={"source": "file", "url": "/data/{Symbol}.csv"}), "url may hold one placeholder"),
    "url with a password": (base(marketData={"source": "file", "url": "https://u:p@data.example.com/{symbol}.csv"}),
                            "url must not carry a password"),
    "empty url": (base(marketData={"source": "file", "url": ""}), ("should be at least 1 chars long", "at least 1 character")),
    # symbols
    "MSFT with the sample": (base(symbols=["MSFT"]), SAMPLE),
    "MSFT with an explicit sample": (base(symbols=["MSFT"], marketData={"source": "sample"}), SAMPLE),
    "lower-case symbol": (base(symbols=["aapl"], marketData=FILE), "a symbol is an exchange ticker in capitals"),
    "symbol with two dots": (base(symbols=["BRK..B"], marketData=FILE), "a symbol is an exchange ticker"),
    "symbol ending with a dot": (base(symbols=["BRK."], marketData=FILE), "a symbol is an exchange ticker"),
    "symbol starting with a digit": (base(symbols=["1ABC"], marketData=FILE), "a symbol is an exchange ticker"),
    "symbol with a space": (base(symbols=["BRK B"], marketData=FILE), "a symbol is an exchange ticker"),
    "eleven-character symbol": (base(symbols=["ABCDEFGHIJK"], marketData=FILE), "a symbol is an exchange ticker"),
    "nine symbols": (base(symbols=["A", "B", "C", "D", "E", "F", "G", "H", "I"], marketData=FILE),
                     "a strategy trades at most 8 symbols"),
    "the same symbol twice": (base(symbols=["AAPL", "AAPL"]), ("Duplicate value", models.SYMBOLS_UNIQUE_MESSAGE)),
    "AAPL and MSFT with the sample": (base(symbols=["AAPL", "MSFT"]), SAMPLE),
    # the bar length
    "daily bars of the sample": (base(marketData={"barSeconds": 86400}), "the bundled sample has minute bars only"),
    "2-minute bars": (base(marketData={**FILE, "barSeconds": 120}), ("Unsupported value", "Input should be 60, 300")),
    # a pod splits its capital over its symbols: canary-1's 1 % of 50,000 USD is 62.50 USD a symbol for eight
    "eight symbols on too little capital": (base(symbols=["A", "B", "C", "D", "E", "F", "G", "H"], marketData=FILE),
                                            "at least 100 USD per symbol"),
    "no symbols": (base(symbols=[]), ("should have at least 1 items", "at least 1 item")),
    # credentials in the trader env
    "PGPASSWORD in the trader env": (base(trader={"env": [{"name": "PGPASSWORD", "value": "hunter2"}]}), "set by the operator"),
}


def assert_admitted(spec: dict) -> None:
    """Both the CRD and the operator's models take ``spec``."""
    assert admit(spec) == []
    assert operator_errors(spec) == ""


def assert_refused_alike(spec: dict, expected: str | tuple[str, str]) -> None:
    """Both refuse ``spec``; ``expected``: the message (or the CRD's and the models' texts) each must contain."""
    crd_expected, model_expected = expected if isinstance(expected, tuple) else (expected, expected)
    refusals = admit(spec)
    assert any(crd_expected in r for r in refusals), refusals
    assert model_expected in operator_errors(spec)


@pytest.mark.parametrize("case", list(GOOD))
def test_good_specs_pass_the_crd_and_the_models(case):
    assert_admitted(GOOD[case])


@pytest.mark.parametrize("case", list(BAD))
def test_bad_specs_fail_the_crd_and_the_models_with_the_same_message(case):
    assert_refused_alike(*BAD[case])


def test_the_sample_rule_is_the_only_refusal_of_a_well_formed_symbol_without_bars():
    refusals = admit(base(symbols=["BRK.B"]))
    assert refusals == [f"spec: Invalid value: {SAMPLE}"]
    assert SAMPLE == "the bundled sample has AAPL only: set spec.marketData to your own bars for other symbols"


def test_duplicate_symbols_are_refused():
    symbols = SCHEMA["properties"]["symbols"]
    assert symbols["x-kubernetes-list-type"] == "set" and symbols["maxItems"] == models.MAX_SYMBOLS == 8
    refusals = crd_errors(symbols, ["AAPL", "AAPL"], "spec.symbols")
    assert "spec.symbols: Duplicate value" in refusals
    assert any(models.SYMBOLS_UNIQUE_MESSAGE in r for r in refusals)
    assert crd_errors(symbols, ["AAPL", "MSFT"], "spec.symbols") == []
    with pytest.raises(ValidationError, match="symbols must be unique"):
        TradingStrategySpec.model_validate(base(symbols=["IBM", "IBM"], marketData=FILE))
    assert TradingStrategySpec.model_validate(base(symbols=["IBM", "MSFT"], marketData=FILE)).symbols == ["IBM", "MSFT"]


def test_the_generated_crd_carries_the_rules():
    """The committed CRD (test_models checks it equals the generator's output) has each rule where it acts."""
    md = SCHEMA["properties"]["marketData"]
    assert md["properties"]["source"] == {**md["properties"]["source"], "enum": ["sample", "file", "postgres", "ib"], "default": "sample"}
    assert [r["rule"] for r in md["x-kubernetes-validations"]] == [r["rule"] for r in models.MARKET_DATA_RULES]
    pg = md["properties"]["postgres"]["properties"]
    assert pg["table"]["default"] == "minute_bars"
    assert pg["passwordSecretKeyRef"]["required"] == ["name", "key"]
    dsn_messages = [r["message"] for r in pg["dsn"]["x-kubernetes-validations"]]
    assert models.DSN_PASSWORD_MESSAGE in dsn_messages and models.DSN_URI_MESSAGE in dsn_messages
    assert "default" not in md  # no server-side default: existing objects read back unchanged
    assert any(r["message"] == SAMPLE for r in SCHEMA["x-kubernetes-validations"])
    symbols = SCHEMA["properties"]["symbols"]
    assert symbols["items"]["x-kubernetes-validations"][0]["message"] == models.SYMBOL_MESSAGE
    assert not any("AAPL" in r["rule"] for r in symbols["x-kubernetes-validations"])  # moved to the spec level
