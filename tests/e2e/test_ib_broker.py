"""End to end on the real local stack (issue 13): a strategy whose trader pods send their orders to Interactive
Brokers (``spec.broker.type: ib``), here the project's protocol-level fake IB Gateway (hack/fake_tws.py) that this
test runs on the node address of the stack's private network, managing the two roles' paper accounts.

Both pods connect with real ``ib_async`` (champion on clientId 10 and account DU111, challenger on 11 and DU222,
the accounts read from a Secret by the kubelet), send the orders they decide, and book IB's fills; a kill with
flatten flattens both accounts AT IB and nothing is sent after that. The fake fills each order at the close of the
bar it was decided on (its orderRef names that bar), so the pods' P&L stays that of the market."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime

import numpy as np
import pytest
import yaml

import demo
from fake_tws import FakeTWS
from quantramp.trader.marketdata import load_minute_bars
from test_control import plugin
from test_killswitch import prom, status, wait_for

pytestmark = pytest.mark.e2e

NAME, NS = "aapl-ib", "default"
CHAMPION_ID, CHALLENGER_ID = 10, 11


class Gateway:
    """The fake IB Gateway on its own event loop thread, bound to the node address (pods reach it there)."""

    def __init__(self, host: str) -> None:
        bars = load_minute_bars("AAPL")
        self._ts, self._close = bars.ts, bars.close
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = FakeTWS(host, 0, private_network=True, accounts=tuple(demo.IB_ACCOUNTS.values()),
                            price_fn=self.price)
        self.port = asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(10)

    def price(self, order) -> float:
        """The close of the bar the order was decided on (orderRef ``AAPL-<bar start>-<n>``), the replay's
        whole-week loops folded back onto the sample."""
        t = np.datetime64(datetime.strptime(order.order_ref.split("-")[1], "%Y%m%dT%H%M%SZ"), "ns")
        week = np.timedelta64(7 * 86400, "s").astype("timedelta64[ns]")
        while t > self._ts[-1]:
            t -= week
        i = int(np.searchsorted(self._ts, t))
        return float(self._close[min(i, len(self._close) - 1)])

    def call(self, fn):
        """Run ``fn()`` on the gateway's loop (its state is that loop's) and return the result."""
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def manifest(host: str, port: int) -> dict:
    spec = {
        "model": {"name": NAME, "version": "2"}, "capitalUsd": 1_000_000, "admission": {"mode": "off"},
        "stopLoss": {"enabled": False},
        "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "2s"},
                   {"name": "canary-1", "capitalPercent": 1, "dwell": "1h", "maxDrawdown": 0.9, "pnlBand": 10},
                   {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.9, "pnlBand": 10}],
        "analysis": {"interval": "2s", "criteria": {"minTrades": 1, "minPrecisionRatio": 0, "minFillRatio": 0,
                                                    "maxSlippageRatio": 100}},
        # positions of at most 5 % of a pod's capital (the challenger's 10,000 USD: two shares), so the runbook's
        # loss alerts (hourly -0.5 % of capital) would need a 10 % move: no alert rolls this ramp back mid-test
        "risk": {"maxPositionPercent": 5, "maxOrderPercent": 5},
        "trader": {"barIntervalSeconds": 0.05},
        "broker": {"type": "ib", "ib": {
            "host": host, "port": port, "mode": "paper", "clientId": CHAMPION_ID,
            "championAccountSecretKeyRef": {"name": demo.IB_SECRET, "key": "champion"},
            "challengerAccountSecretKeyRef": {"name": demo.IB_SECRET, "key": "challenger"}}},
    }
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy",
            "metadata": {"name": NAME, "namespace": NS}, "spec": spec}


@pytest.fixture(scope="module")
def ib_strategy(operator_stack):
    s = operator_stack
    s.train(NAME, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
    s.train(NAME, ["--kind", "logistic", "--seed", "2"])
    gw = Gateway(s.env["QR_NODE_IP"])
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(s.env["QR_NODE_IP"], gw.port)))
    yield s, gw
    s.kubectl("delete", "tradingstrategy", NAME, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)
    gw.stop()


def test_both_pods_trade_their_own_accounts_at_ib_and_a_kill_flattens_them_there(ib_strategy):
    s, gw = ib_strategy
    accounts = {CHAMPION_ID: demo.IB_ACCOUNTS["champion"], CHALLENGER_ID: demo.IB_ACCOUNTS["challenger"]}
    wait_for(s, NAME, lambda st: st.get("stage") == "canary-1" and any(
        c["type"] == "TradersReady" and c["status"] == "True" for c in st.get("conditions", [])), timeout=300)

    # the pods' contract: QR_BROKER=ib, their client ids, the account from the Secret (never a plain value)
    for role, client in (("champion", CHAMPION_ID), ("challenger", CHALLENGER_ID)):
        dep = json.loads(s.kubectl("get", "deployment", f"{NAME}-{role}", "-n", NS, "-o", "json").stdout)
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["QR_BROKER"]["value"] == "ib" and env["IB_CLIENT_ID"]["value"] == str(client)
        assert env["IB_ACCOUNT"]["valueFrom"]["secretKeyRef"] == {"name": demo.IB_SECRET, "key": role}

    # both roles' orders reach IB from their own client, into their own account, and fill
    def filled_by_client() -> dict[int, int]:
        return gw.call(lambda: {c: sum(1 for ex in gw.fake.executions if ex.order.client_id == c) for c in accounts})

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not all(n >= 3 for n in filled_by_client().values()):
        time.sleep(1)
    print("\nIB executions by client:", filled_by_client())
    assert all(n >= 3 for n in filled_by_client().values()), filled_by_client()
    orders = gw.call(lambda: [(o.client_id, o.account, o.order_ref) for o in gw.fake.orders.values()])
    assert {(c, a) for c, a, _ in orders} == set(accounts.items()), orders[:5]
    assert all(ref.startswith("AAPL-") for _, _, ref in orders)
    # the pods book IB's fills: their trades are the executions IB reported (a few scrapes behind)
    deadline = time.monotonic() + 30
    while True:
        trades = prom(s, f'quantramp_trades_total{{strategy="{NAME}"}}')
        if trades.get("champion", 0) > 0 and trades.get("challenger", 0) > 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert trades.get("champion", 0) > 0 and trades.get("challenger", 0) > 0, trades

    # kill with flatten: both accounts flat AT IB, and nothing is sent once they are
    out = plugin(s, "kill", "on", NAME, "--reason", "e2e: IB drill", "-o", "json")
    assert set(json.loads(out.stdout)["acks"]) == {"champion", "challenger"}

    def positions() -> dict[str, float]:
        return gw.call(lambda: {a: gw.fake.account_positions.get(a, {}).get("AAPL", [0.0])[0] for a in accounts.values()})

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(positions().values()):
        time.sleep(0.5)
    assert not any(positions().values()), positions()
    n = gw.call(lambda: len(gw.fake.orders))
    time.sleep(4)
    assert gw.call(lambda: len(gw.fake.orders)) == n, "an order reached IB after the accounts were flattened"
    print("phase after the kill:", status(s, NAME)["phase"])  # (the ramp's own reaction: tests/e2e/test_killswitch.py)
    flat = prom(s, f'abs(quantramp_position_notional_usd{{strategy="{NAME}"}})')
    assert flat and all(v == 0 for v in flat.values()), flat
