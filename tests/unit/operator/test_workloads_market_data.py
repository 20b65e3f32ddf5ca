"""spec.marketData reaches both trader Deployments as env (QR_BARS_*, PGPASSWORD by secretKeyRef); the bundled
sample adds nothing, so existing strategies render exactly what they did before."""

from datetime import datetime, timezone

import pytest

from quantramp.operator import engine
from quantramp.operator.models import TradingStrategySpec
from quantramp.operator.workloads import TraderDefaults, manifests_hash, render_deployments

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
DSN = "postgresql://quantramp@db.trading:5432/market"


def spec(**kw):
    return TradingStrategySpec.model_validate({"model": {"name": "m", "version": "5"}, "capitalUsd": 200_000,
                                               "trader": {"env": [{"name": "EXTRA", "value": "x"}]}, **kw})


def status(s, index=1):
    st = engine.start(s, None, engine.StartFacts(True, "4"), T0, "NewStrategy", 1).status
    engine._enter_stage(st, index, T0)
    st.phase = "Progressing"
    engine._allocate(st)
    return st


def render(s, live=False):
    return render_deployments("s", "ns", s, status(s), {"REDIS_URL": "redis://redis:6379/0"}, live_allocation=live,
                              defaults=TraderDefaults(mlflow_secret={"name": "mlflow-creds"}), redis_user="abcd1234")


def envs(s, live=False):
    """{role: [env entries]} of the trader container."""
    return {d["metadata"]["labels"]["quantramp.io/role"]: d["spec"]["template"]["spec"]["containers"][0]["env"]
            for d in render(s, live)}


def by_name(entries):
    return {e["name"]: e for e in entries}


@pytest.mark.parametrize("live", [False, True])
def test_the_sample_renders_exactly_what_a_strategy_without_market_data_did(live):
    before = render(spec(), live)
    for md in ({}, {"source": "sample"}):
        assert render(spec(marketData=md), live) == before
        assert manifests_hash(render(spec(marketData=md), live)) == manifests_hash(before)
    for entries in envs(spec(), live).values():
        names = [e["name"] for e in entries]
        assert not [n for n in names if n.startswith("QR_BARS_") or n == "PGPASSWORD"], names
        assert names.count("QR_SYMBOLS") == 1 and by_name(entries)["QR_SYMBOLS"]["value"] == "AAPL"


def test_file_source_reaches_both_roles():
    s = spec(symbols=["BRK.B"], marketData={"source": "file", "url": "/data/bars/{symbol}.parquet"})
    out = envs(s)
    assert set(out) == {"champion", "challenger"}
    for role, entries in out.items():
        env = by_name(entries)
        assert env["QR_BARS_SOURCE"]["value"] == "file"
        assert env["QR_BARS_URL"]["value"] == "/data/bars/{symbol}.parquet"  # the trader fills in {symbol}
        assert env["QR_SYMBOLS"]["value"] == "BRK.B"
        assert not {"QR_BARS_POSTGRES_DSN", "QR_BARS_TABLE", "PGPASSWORD"} & set(env)
        # the other env is what the sample renders
        assert [e for e in entries if not e["name"].startswith("QR_BARS_") and e["name"] != "QR_SYMBOLS"] == \
            [e for e in envs(spec())[role] if e["name"] != "QR_SYMBOLS"]


@pytest.mark.parametrize("live", [False, True])
def test_postgres_source_with_the_password_by_secret_key_ref_only(live):
    s = spec(symbols=["MSFT"], marketData={"source": "postgres", "postgres": {
        "dsn": DSN, "table": "market.minute_bars", "passwordSecretKeyRef": {"name": "market-db", "key": "pw"}}})
    for role, entries in envs(s, live).items():
        env = by_name(entries)
        assert env["QR_BARS_SOURCE"]["value"] == "postgres", role
        assert env["QR_BARS_POSTGRES_DSN"]["value"] == DSN
        assert env["QR_BARS_TABLE"]["value"] == "market.minute_bars"
        assert "QR_BARS_URL" not in env
        assert env["PGPASSWORD"] == {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "market-db", "key": "pw"}}}
        assert [e["name"] for e in entries].count("PGPASSWORD") == 1
        # every credential is a secretKeyRef, never a value; the strategy's own env still comes last
        secret_names = {"PGPASSWORD", "QR_REDIS_USERNAME", "QR_REDIS_PASSWORD", "MLFLOW_TRACKING_USERNAME",
                        "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"}
        assert all("value" not in e and "secretKeyRef" in e["valueFrom"] for e in entries if e["name"] in secret_names)
        assert entries[-1] == {"name": "EXTRA", "value": "x"}


def test_postgres_defaults_the_table_and_may_have_no_password():
    s = spec(symbols=["IBM"], marketData={"source": "postgres", "postgres": {"dsn": DSN}})
    for entries in envs(s).values():
        env = by_name(entries)
        assert env["QR_BARS_TABLE"]["value"] == "minute_bars"
        assert "PGPASSWORD" not in env


def test_several_symbols_and_daily_bars_reach_both_roles():
    s = spec(symbols=["MSFT", "AAPL"], marketData={"source": "file", "url": "/data/{symbol}.csv", "barSeconds": 86400})
    for role, entries in envs(s).items():
        env = by_name(entries)
        assert env["QR_SYMBOLS"]["value"] == "MSFT,AAPL", role
        assert env["QR_BAR_SECONDS"]["value"] == "86400"
    minute = spec(symbols=["MSFT"], marketData={"source": "file", "url": "/data/{symbol}.csv", "barSeconds": 60})
    assert all("QR_BAR_SECONDS" not in by_name(e) for e in envs(minute).values())
