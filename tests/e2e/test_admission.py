"""The API server itself rejects malformed TradingStrategies with a message that says what to fix."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.e2e


def manifest(**spec_overrides):
    spec = {"model": {"name": "m", "version": "1"}, "capitalUsd": 100_000}
    spec.update(spec_overrides)
    for key, value in list(spec.items()):
        if value is None:
            del spec[key]
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": "bad"}, "spec": spec}


def stages(*pcts, **extra):
    out = [{"name": f"s{i}", "capitalPercent": p} for i, p in enumerate(pcts)]
    for i, kv in extra.items():
        out[int(i[1:])].update(kv)
    return out


def with_analysis(**kv):
    return manifest(analysis=kv)


def with_trader(**kv):
    return manifest(trader=kv)


def named(name, **spec):
    body = manifest(**spec)
    body["metadata"]["name"] = name
    return body


CASES = {
    # stages
    "capital percent above 100": (manifest(stages=stages(0, 150)), "should be less than or equal to 100"),
    "capital percent below 0": (manifest(stages=stages(-1, 100)), "should be greater than or equal to 0"),
    "capital not increasing": (manifest(stages=stages(5, 1, 100)), "stages must have strictly increasing capitalPercent"),
    "capital repeated": (manifest(stages=stages(0, 5, 5, 100)), "strictly increasing capitalPercent"),
    "last stage below 100": (manifest(stages=stages(0, 5, 50)), "the last stage must have capitalPercent 100"),
    "one stage only": (manifest(stages=stages(100)), "spec.stages: Invalid value"),
    "empty stage list": (manifest(stages=[]), "spec.stages: Invalid value"),
    "eleven stages": (manifest(stages=stages(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100)), "must have at most 10 items"),
    "duplicate stage names": (manifest(stages=[{"name": "a", "capitalPercent": 0}, {"name": "a", "capitalPercent": 100}]), "stage names must be unique"),
    "stage name with capitals": (manifest(stages=[{"name": "Shadow", "capitalPercent": 0}, {"name": "p", "capitalPercent": 100}]), "spec.stages[0].name"),
    "stage name empty": (manifest(stages=[{"name": "", "capitalPercent": 0}, {"name": "p", "capitalPercent": 100}]), "spec.stages[0].name"),
    "stage without capital": (manifest(stages=[{"name": "a"}, {"name": "p", "capitalPercent": 100}]), "spec.stages[0].capitalPercent: Required value"),
    "negative dwell": (manifest(stages=stages(0, 100, s0={"dwell": "-5s"})), "dwell must be a non-negative duration"),
    "dwell without unit": (manifest(stages=stages(0, 100, s0={"dwell": "30"})), "dwell must be a non-negative duration"),
    "dwell in weeks": (manifest(stages=stages(0, 100, s0={"dwell": "2w"})), "dwell must be a non-negative duration"),
    "dwell that overflows": (manifest(stages=stages(0, 100, s0={"dwell": "99999999999999999999d"})), "dwell must be a non-negative duration"),
    "drawdown cap above 1": (manifest(stages=stages(0, 100, s1={"maxDrawdown": 2})), "should be less than or equal to 1"),
    "drawdown cap of zero": (manifest(stages=stages(0, 100, s1={"maxDrawdown": 0})), "maxDrawdown"),
    "negative P&L band": (manifest(stages=stages(0, 100, s1={"pnlBand": -0.1})), "pnlBand"),
    "live stage below 100 USD": (manifest(capitalUsd=5000, stages=stages(0, 1, 100)), "every live stage must give the challenger at least 100 USD"),
    # model
    "missing model name": (manifest(model={"version": "1"}), "spec.model.name: Required value"),
    "model name with a slash": (manifest(model={"name": "a/b", "version": "1"}), "spec.model.name"),
    "model name with a space": (manifest(model={"name": "my model", "version": "1"}), "spec.model.name"),
    "version zero": (manifest(model={"name": "m", "version": "0"}), "spec.model.version"),
    "version with leading zero": (manifest(model={"name": "m", "version": "02"}), "spec.model.version"),
    "version not a number": (manifest(model={"name": "m", "version": "latest"}), "spec.model.version"),
    "version as an alias": (manifest(model={"name": "m", "version": "@champion"}), "spec.model.version"),
    # capital, symbols
    "missing capital": (manifest(capitalUsd=None), "spec.capitalUsd: Required value"),
    "zero capital": (manifest(capitalUsd=0), "spec.capitalUsd"),
    "negative capital": (manifest(capitalUsd=-5), "spec.capitalUsd"),
    "no symbols": (manifest(symbols=[]), "spec.symbols"),
    "nine symbols": (manifest(symbols=["AAPL", "MSFT", "IBM", "GOOG", "A", "B", "C", "D", "E"]), "spec.symbols"),
    "MSFT beside AAPL on the sample": (manifest(symbols=["AAPL", "MSFT"]), "the bundled sample has AAPL only"),
    "symbol without data": (manifest(symbols=["MSFT"]), "the bundled sample has AAPL only: set spec.marketData"),
    "lower-case symbol": (manifest(symbols=["msft"], marketData={"source": "file", "url": "/b/{symbol}.csv"}), "a symbol is an exchange ticker"),
    "duplicate symbols": (manifest(symbols=["AAPL", "AAPL"]), "spec.symbols"),
    # market data
    "file without url": (manifest(marketData={"source": "file"}), "source file needs marketData.url"),
    "postgres without dsn": (manifest(marketData={"source": "postgres"}), "source postgres needs marketData.postgres.dsn"),
    "url with the sample": (manifest(marketData={"url": "/b.csv"}), "url is read only with source file"),
    "postgres settings with file": (manifest(marketData={"source": "file", "url": "/b.csv", "postgres": {"dsn": "postgresql://q@db/m"}}),
                                    "postgres is read only with source postgres"),
    "password in the dsn": (manifest(marketData={"source": "postgres", "postgres": {"dsn": "postgresql://q:pw@db/m"}}),
                            "put the password in a Secret and name it in passwordSecretKeyRef"),
    "password parameter in the dsn": (manifest(marketData={"source": "postgres", "postgres": {"dsn": "postgresql://q@db/m?password=pw"}}),
                                      "put the password in a Secret"),
    "table that is not an identifier": (manifest(marketData={"source": "postgres", "postgres": {"dsn": "postgresql://q@db/m", "table": "bars;x"}}),
                                        "table must be a lower-case SQL identifier"),
    "the strategy's Redis Secret as the password": (manifest(marketData={"source": "postgres", "postgres": {
        "dsn": "postgresql://q@db/m", "passwordSecretKeyRef": {"name": "bad-trader-redis", "key": "password"}}}), "may not name a strategy's Redis Secret"),
    "url with another placeholder": (manifest(marketData={"source": "file", "url": "/b/{sym}.csv"}), "url may hold one placeholder"),
    # calendars (a symbol's exchange)
    "calendar with a midday break": (manifest(symbols=["T"], calendars={"T": "XTKS"}, marketData={"source": "file", "url": "/b/{symbol}.csv"}),
                                     "Unsupported value"),
    "calendar of a symbol not traded": (manifest(symbols=["MSFT"], calendars={"CSPX": "XLON"}, marketData={"source": "file", "url": "/b/{symbol}.csv"}),
                                        "calendars names a symbol spec.symbols does not trade"),
    "London with the sample": (manifest(calendars={"AAPL": "XLON"}), "need your own bars"),
    "London at IB": (manifest(symbols=["CSPX"], calendars={"CSPX": "XLON"}, marketData={"source": "file", "url": "/b/{symbol}.csv"},
                              broker={"type": "ib", "ib": {"host": "ib", "championAccountSecretKeyRef": {"name": "a", "key": "c"},
                                                           "challengerAccountSecretKeyRef": {"name": "a", "key": "d"}}}),
                     "the simulated broker"),
    # analysis
    "zero interval": (with_analysis(interval="0s"), "interval must be greater than zero"),
    "interval without unit": (with_analysis(interval="5"), "interval must be a non-negative duration"),
    "negative failure limit": (with_analysis(failureLimit=-1), "failureLimit"),
    "zero error retry": (with_analysis(errorRetry="0m"), "errorRetry must be greater than zero"),
    "unknown error policy": (with_analysis(onMetricError="ignore"), "onMetricError"),
    "unknown deadline policy": (with_analysis(onProgressDeadline="promote"), "onProgressDeadline"),
    "fill ratio above 1": (with_analysis(criteria={"minFillRatio": 1.5}), "minFillRatio"),
    "negative min trades": (with_analysis(criteria={"minTrades": -1}), "minTrades"),
    "zero slippage ratio": (with_analysis(criteria={"maxSlippageRatio": 0}), "maxSlippageRatio"),
    "unknown criteria field": (with_analysis(criteria={"minSharpe": 1}), 'unknown field "spec.analysis.criteria.minSharpe"'),
    # user criteria
    "metric condition that is not a comparison": (with_analysis(metrics=[{"name": "e", "query": "x", "successCondition": "os.system('x')"}]), "successCondition must compare `result` with numbers"),
    "metric condition on another variable": (with_analysis(metrics=[{"name": "e", "query": "x", "failureCondition": "value > 1"}]), "failureCondition must compare"),
    "metric without a condition": (with_analysis(metrics=[{"name": "e", "query": "x"}]), "a metric needs a successCondition or a failureCondition"),
    "metric named like a built-in": (with_analysis(metrics=[{"name": "drawdown", "query": "x", "successCondition": "result < 1"}]), "belongs to a built-in criterion"),
    "duplicate metric names": (with_analysis(metrics=[{"name": "e", "query": "x", "successCondition": "result < 1"}] * 2), "metric names must be unique"),
    "metric with an empty query": (with_analysis(metrics=[{"name": "e", "query": "", "successCondition": "result < 1"}]), "spec.analysis.metrics[0].query"),
    "metric with an unknown aggregate": (with_analysis(metrics=[{"name": "e", "query": "x", "aggregate": "p99", "successCondition": "result < 1"}]), "aggregate"),
    # risk and trader
    "position limit above 100%": (manifest(risk={"maxPositionPercent": 150}), "maxPositionPercent"),
    "zero daily loss": (manifest(risk={"maxDailyLossPercent": 0}), "maxDailyLossPercent"),
    "entry threshold of 0.5": (with_trader(entryThreshold=0.5), "entryThreshold"),
    "zero bar interval": (with_trader(barIntervalSeconds=0), "barIntervalSeconds"),
    "empty command": (with_trader(command=[]), "spec.trader.command"),
    "image with a space": (with_trader(image="quantramp dev"), "spec.trader.image"),
    "env overriding the capital": (with_trader(env=[{"name": "QR_CAPITAL_USD", "value": "9999999"}]), "set by the operator"),
    "env overriding the redis url": (with_trader(env=[{"name": "REDIS_URL", "value": "redis://x"}]), "set by the operator"),
    "env with a valueFrom": (with_trader(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]), "unknown field"),
    "env with a bad name": (with_trader(env=[{"name": "1X", "value": "y"}]), "spec.trader.env[0].name"),
    "duplicate env": (with_trader(env=[{"name": "X", "value": "1"}, {"name": "X", "value": "2"}]), "env names must be unique"),
    # metadata
    "name too long for its Deployments": (named("s" * 53), "metadata.name may have at most 52 characters"),
}

ODD_BUT_VALID = {
    "two stages straight to production": manifest(stages=stages(0, 100)),
    "no shadow stage": manifest(stages=stages(1, 100)),
    "fractional capital percent": manifest(capitalUsd=1e6, stages=stages(0, 0.5, 100)),
    "fractional dwell": manifest(stages=stages(0, 100, s0={"dwell": "1.5h"})),
    "longest name": named("s" * 52),
    "model name with dots and dashes": manifest(model={"name": "Desk_A.mean-rev.v2", "version": "123456789"}),
    "failure limit of 5 and no trades needed": with_analysis(failureLimit=5, criteria={"minTrades": 0}),
    "entry threshold of zero": with_trader(entryThreshold=0),
    "baseline precision for a first model": with_analysis(criteria={"baselinePrecision": 0.55}),
    "plain extra env": with_trader(env=[{"name": "LOG_LEVEL", "value": "debug"}]),
    "any symbol with your own bars (file)": manifest(symbols=["BRK.B"], marketData={"source": "file", "url": "/data/bars/{symbol}.parquet"}),
    "any symbol with your own bars (postgres)": manifest(symbols=["MSFT"], marketData={"source": "postgres", "postgres": {
        "dsn": "postgresql://quantramp@db.trading:5432/market", "table": "market.minute_bars",
        "passwordSecretKeyRef": {"name": "market-db", "key": "password"}}}),
    "empty marketData is the sample": manifest(marketData={}),
    "a London line beside a New York symbol": manifest(symbols=["MSFT", "CSPX"], calendars={"CSPX": "XLON"},
                                                       marketData={"source": "file", "url": "/data/bars/{symbol}.csv"}),
    "a dry-run user metric with both conditions": with_analysis(metrics=[{
        "name": "sharpeProxy", "query": "quantramp_pnl_usd / quantramp_capital_usd", "aggregate": "min",
        "successCondition": "result >= 0.001 && result < 1", "failureCondition": "result < -0.02 || result > 5", "dryRun": True}]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_manifest_is_rejected(stack, case):
    stack.install_crd()
    body, expected = CASES[case]
    out = stack.kubectl("apply", "-f", "-", check=False, stdin=yaml.safe_dump(body))
    assert out.returncode != 0, out.stdout
    assert expected in out.stderr, out.stderr
    assert stack.kubectl("get", "tradingstrategy", "bad", check=False).returncode != 0


def test_enough_malformed_manifests_are_covered():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", list(ODD_BUT_VALID))
def test_odd_but_valid_manifest_is_accepted(stack, case):
    stack.install_crd()
    # in a namespace no operator watches: this is about the CRD's schema, not the chart's admission policies
    # (its trader allow-list refuses the plain extra env, as the platform's values say)
    body = {**ODD_BUT_VALID[case], "metadata": {"name": "bad", "namespace": "admission"}}
    stack.kubectl("create", "namespace", "admission", check=False)
    out = stack.kubectl("apply", "--dry-run=server", "-f", "-", check=False, stdin=yaml.safe_dump(body))
    assert out.returncode == 0, out.stderr
    # and the operator can parse what the API server stored
    from quantramp.operator.models import TradingStrategySpec

    stored = yaml.safe_load(stack.kubectl("apply", "--dry-run=server", "-o", "yaml", "-f", "-", stdin=yaml.safe_dump(body)).stdout)
    TradingStrategySpec.model_validate(stored["spec"])


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
