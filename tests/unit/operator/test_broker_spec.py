"""spec.broker: the generated CRD's rules and the pydantic models agree (evaluated as in
test_market_data_spec.py), and the broker reaches the trader Deployments as env: QR_BROKER=ib and IB_*,
IB_ACCOUNT by secretKeyRef only, the challenger on clientId + 1, and no paper (shadow) pod on a live account."""

from __future__ import annotations

import pytest

from test_market_data_spec import assert_admitted, assert_refused_alike, base
from test_workloads_market_data import by_name, envs, spec

ACCOUNTS = {"championAccountSecretKeyRef": {"name": "ib-accounts", "key": "champion"},
            "challengerAccountSecretKeyRef": {"name": "ib-accounts", "key": "challenger"}}
IB = {"type": "ib", "ib": {"host": "ib-gateway.trading.svc", **ACCOUNTS}}


def ib(**kw) -> dict:
    """broker {type: ib, ib: {...}} with both accounts and ``kw``."""
    return {"type": "ib", "ib": {"host": "ib", **ACCOUNTS, **kw}}
DSN = "postgresql://quantramp@db.trading:5432/market"

GOOD = {
    "no broker": base(),
    "sim said": base(broker={"type": "sim"}),
    "ib with a host": base(broker=IB),
    "ib by IPv4": base(broker=ib(host="10.0.0.12")),
    "ib gateway live with everything": base(broker=ib(host="ib-gateway", port=4001, app="gateway", mode="live", clientId=10)),
    "accounts in two Secrets": base(broker=ib(championAccountSecretKeyRef={"name": "a", "key": "k"},
                                              challengerAccountSecretKeyRef={"name": "b", "key": "k"})),
    "live IB bars": base(broker=IB, marketData={"source": "ib"}, symbols=["MSFT", "AAPL"]),
    "live IB daily bars": base(broker=IB, marketData={"source": "ib", "barSeconds": 86400}),
    "a followed table": base(marketData={"source": "postgres", "postgres": {"dsn": DSN}, "follow": True}),
    "a followed file": base(marketData={"source": "file", "url": "/data/{symbol}.csv", "follow": True}),
}

BAD = {
    "ib without ib": (base(broker={"type": "ib"}), "broker.type ib needs broker.ib"),
    "ib settings with sim": (base(broker={"type": "sim", "ib": {"host": "x", **ACCOUNTS}}), "broker.ib is read only with type ib"),
    "no challenger account": (base(broker={"type": "ib", "ib": {"host": "ib", "championAccountSecretKeyRef": {
        "name": "a", "key": "k"}}}), ("challengerAccountSecretKeyRef: Required value", "Field required")),
    "one account for both roles": (base(broker=ib(challengerAccountSecretKeyRef={"name": "ib-accounts", "key": "champion"})),
                                   "the champion and the challenger trade different IB accounts"),
    "unknown broker": (base(broker={"type": "alpaca"}), ("Unsupported value", "Input should be 'sim' or 'ib'")),
    "host with a scheme": (base(broker=ib(host="tcp://ib:4002")), "host must be a DNS name"),
    "host in capitals": (base(broker=ib(host="IB-Gateway")), "host must be a DNS name"),
    "port 0": (base(broker=ib(port=0)),
               ("spec.broker.ib.port: should be greater than", "greater than or equal to 1")),
    "unknown mode": (base(broker=ib(mode="demo")),
                     ("Unsupported value", "Input should be 'paper' or 'live'")),
    "negative client id": (base(broker=ib(clientId=-1)),
                           ("spec.broker.ib.clientId: should be greater than", "greater than or equal to 0")),
    "the strategy's Redis Secret as an account": (base(broker=ib(challengerAccountSecretKeyRef={
        "name": "s-trader-redis", "key": "account"})), "may not name a strategy's Redis Secret"),
    "IB bars without an IB connection": (base(marketData={"source": "ib"}, symbols=["MSFT"]),
                                         "marketData.source ib reads the bars over the strategy's IB connection"),
    "IB bars with the simulated broker said": (base(broker={"type": "sim"}, marketData={"source": "ib"}),
                                               "marketData.source ib reads the bars over the strategy's IB connection"),
    "following the sample": (base(marketData={"follow": True}), "marketData.follow needs bars that grow"),
    "IB_MODE in the trader env": (base(trader={"env": [{"name": "IB_MODE", "value": "live"}]}), "set by the operator"),
    "IB_ACCOUNT in the trader env": (base(trader={"env": [{"name": "IB_ACCOUNT", "value": "U123"}]}), "set by the operator"),
}


@pytest.mark.parametrize("case", list(GOOD))
def test_good_broker_specs_pass_the_crd_and_the_models(case):
    assert_admitted(GOOD[case])


@pytest.mark.parametrize("case", list(BAD))
def test_bad_broker_specs_fail_the_crd_and_the_models_with_the_same_message(case):
    assert_refused_alike(*BAD[case])


@pytest.mark.parametrize("live", [False, True])
def test_the_simulated_broker_adds_no_env(live):
    for entries in envs(spec(), live).values():
        names = [e["name"] for e in entries]
        assert not [n for n in names if n.startswith("IB_") or n == "QR_BROKER"], names


def test_ib_paper_reaches_both_roles_each_with_its_own_client_id():
    s = spec(broker={"type": "ib", "ib": {"host": "ib-gateway", "app": "gateway", "clientId": 10, **ACCOUNTS}})
    out = {role: by_name(entries) for role, entries in envs(s).items()}
    for role, client in (("champion", "10"), ("challenger", "11")):
        e = out[role]
        assert {k: e[k]["value"] for k in ("QR_BROKER", "IB_HOST", "IB_APP", "IB_MODE", "IB_CLIENT_ID")} == {
            "QR_BROKER": "ib", "IB_HOST": "ib-gateway", "IB_APP": "gateway", "IB_MODE": "paper", "IB_CLIENT_ID": client}
        assert "IB_PORT" not in e  # the application's default port for app and mode
        assert e["IB_ACCOUNT"] == {"name": "IB_ACCOUNT", "valueFrom": {"secretKeyRef": {"name": "ib-accounts", "key": role}}}


def test_a_paper_pod_never_reaches_a_live_account():
    """Shadow (paper) pods keep the simulated broker against a live account; pods with capital go to IB."""
    s = spec(broker=ib(mode="live", port=4001))
    from quantramp.operator import workloads

    for paper in (True, False):
        env = workloads.broker_env(s, "challenger", paper)
        secret = workloads.broker_secret_env(s, "challenger", paper)
        if paper:
            assert env == {} and secret == []
        else:
            assert env["QR_BROKER"] == "ib" and env["IB_MODE"] == "live" and env["IB_PORT"] == "4001"
            assert secret[0]["name"] == "IB_ACCOUNT"


def test_live_ib_bars_reach_a_paper_pod_on_a_live_account_without_its_orders():
    """Shadow on a live account: IB's bars (read-only), the simulated broker; stages with capital: both."""
    from quantramp.operator import workloads

    s = spec(symbols=["MSFT"], broker=ib(mode="live"), marketData={"source": "ib"})
    paper = workloads.broker_env(s, "challenger", True)
    assert "QR_BROKER" not in paper and paper["IB_HOST"] == "ib" and paper["IB_MODE"] == "live"
    assert workloads.broker_env(s, "challenger", False)["QR_BROKER"] == "ib"
    for entries in envs(s).values():
        e = by_name(entries)
        assert e["QR_BARS_SOURCE"]["value"] == "ib" and "QR_BARS_FOLLOW" not in e  # (ib bars are always followed)


def test_a_followed_table_says_so_to_both_roles():
    s = spec(symbols=["MSFT"], marketData={"source": "postgres", "postgres": {"dsn": DSN}, "follow": True})
    for entries in envs(s).values():
        assert by_name(entries)["QR_BARS_FOLLOW"]["value"] == "true"
