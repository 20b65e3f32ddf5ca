"""spec.calendars: a symbol's exchange calendar. The generated CRD's rules and the pydantic models agree
(evaluated as in test_market_data_spec.py), the names are the trader's supported calendars, and the map
reaches both trader Deployments as QR_CALENDARS, which the trader's settings read back."""

from __future__ import annotations

import pytest

from quantramp.operator import models
from quantramp.trader import session as sess
from quantramp.trader.server import ConfigError, TraderSettings

from test_market_data_spec import assert_admitted, assert_refused_alike, base
from test_workloads_market_data import by_name, envs, spec

PG = {"source": "postgres", "postgres": {"dsn": "postgresql://quantramp@db.trading:5432/market"}}
FILE = {"source": "file", "url": "/data/bars/{symbol}.parquet"}
IB = {"type": "ib", "ib": {"host": "ib", "championAccountSecretKeyRef": {"name": "a", "key": "c"},
                           "challengerAccountSecretKeyRef": {"name": "a", "key": "d"}}}

GOOD = {
    "a London line next to a New York one": base(symbols=["AAPL", "CSPX"], calendars={"CSPX": "XLON"}, marketData=PG),
    "every symbol elsewhere, from files": base(symbols=["SAP", "SHOP"], calendars={"SAP": "XETR", "SHOP": "XTSE"},
                                               marketData=FILE),
    "XNYS said explicitly, with the sample": base(calendars={"AAPL": "XNYS"}),
    "XNYS said explicitly, with IB": base(symbols=["MSFT"], calendars={"MSFT": "XNYS"}, broker=IB, marketData=PG),
    "no calendars": base(symbols=["MSFT"], marketData=PG),
}
BAD = {
    "a calendar of a symbol not traded": (base(symbols=["AAPL"], calendars={"MSFT": "XLON"}, marketData=PG),
                                          models.CALENDARS_SYMBOLS_MESSAGE),
    "a calendar with a midday break (Tokyo)": (base(symbols=["T"], calendars={"T": "XTKS"}, marketData=PG),
                                               ("Unsupported value", "Input should be")),
    "not an exchange_calendars name": (base(symbols=["T"], calendars={"T": "LSE"}, marketData=PG),
                                       ("Unsupported value", "Input should be")),
    "the sample is XNYS bars": (base(calendars={"AAPL": "XLON"}), models.CALENDARS_XNYS_ONLY_MESSAGE),
    "IB trades US stocks": (base(symbols=["CSPX"], calendars={"CSPX": "XLON"}, marketData=PG, broker=IB),
                            models.CALENDARS_XNYS_ONLY_MESSAGE),
    "IB bars are US stocks": (base(symbols=["CSPX"], calendars={"CSPX": "XLON"}, marketData={"source": "ib"}, broker=IB),
                              models.CALENDARS_XNYS_ONLY_MESSAGE),
}


@pytest.mark.parametrize("case", list(GOOD))
def test_good_calendars_pass_the_crd_and_the_models(case):
    assert_admitted(GOOD[case])


@pytest.mark.parametrize("case", list(BAD))
def test_bad_calendars_fail_the_crd_and_the_models(case):
    assert_refused_alike(*BAD[case])


def test_the_crd_offers_exactly_the_calendars_the_trader_runs():
    assert models.CALENDARS == sess.SUPPORTED_CALENDARS
    assert models.DEFAULT_CALENDAR == sess.CALENDAR_NAME


@pytest.mark.parametrize("live", [False, True])
def test_the_calendars_reach_both_pods_and_the_trader_reads_them_back(live):
    s = spec(symbols=["AAPL", "CSPX", "SAP"], calendars={"CSPX": "XLON", "SAP": "XETR"}, marketData=PG)
    for role, entries in envs(s, live).items():
        env = {k: e.get("value", "") for k, e in by_name(entries).items()}
        assert env["QR_CALENDARS"] == "CSPX=XLON,SAP=XETR", role
        settings = TraderSettings.from_env({**env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
                                            "QR_CAPITAL_USD": env.get("QR_CAPITAL_USD") or "1000"})
        assert [settings.engine_config(x).calendar for x in ("AAPL", "CSPX", "SAP")] == ["XNYS", "XLON", "XETR"]


def test_a_strategy_without_calendars_renders_no_calendar_env():
    for entries in envs(spec(symbols=["MSFT"], marketData=PG)).values():
        assert "QR_CALENDARS" not in by_name(entries)


@pytest.mark.parametrize("value, message", [
    ("CSPX", "is not SYMBOL=CALENDAR"),
    ("MSFT=XLON", "MSFT is not traded"),
    ("CSPX=XTKS", "unsupported calendar"),
    ("CSPX=XLON,CSPX=XETR", "CSPX named twice"),
])
def test_the_trader_refuses_a_calendar_setting_it_cannot_run(value, message):
    env = {"QR_SYMBOLS": "AAPL,CSPX", "QR_CAPITAL_USD": "1000", "QR_CALENDARS": value,
           "QR_BARS_SOURCE": "file", "QR_BARS_URL": "/data/{symbol}.csv"}
    with pytest.raises(ConfigError, match=message):
        TraderSettings.from_env(env)


@pytest.mark.parametrize("extra", [{}, {"QR_BARS_SOURCE": "file", "QR_BARS_URL": "/d/{symbol}.csv", "QR_BROKER": "ib",
                                        "IB_HOST": "ib", "IB_ACCOUNT": "DU1"}])
def test_the_trader_refuses_another_exchange_on_the_sample_or_at_ib(extra):
    env = {"QR_SYMBOLS": "AAPL", "QR_CAPITAL_USD": "1000", "QR_CALENDARS": "AAPL=XLON", **extra}
    with pytest.raises(ConfigError, match="on another exchange than XNYS"):
        TraderSettings.from_env(env)
